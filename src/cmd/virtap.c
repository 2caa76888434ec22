// SPDX-License-Identifier: MIT
/*
 * virtap daemon: parse the configuration, create the ports on one control-plane event loop, run
 * until SIGINT/SIGTERM, tear everything down. The datapath runs on the ports' worker threads.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "config.h"
#include "virtap/evl.h"
#include "virtap/log.h"
#include "virtap/vu.h"

static struct daemon_config cfg;
static struct vu_port *ports[CFG_MAX_PORTS];
static struct evl *loop;

static void log_stats(void)
{
	for (unsigned i = 0; i < cfg.nports; i++) {
		struct vnet_stats s;

		if (!ports[i])
			continue;
		vu_port_stats(ports[i], &s);
		vt_info(
		    "%s: %s rx %llu pkts %llu bytes, tx %llu pkts %llu bytes, drops rx "
		    "too-big %llu hold-full %llu backend %llu, tx bad-hdr %llu backend %llu, "
		    "held %llu, paused %llu",
		    vu_port_name(ports[i]), vu_port_connected(ports[i]) ? "up" : "waiting",
		    (unsigned long long)s.rx_packets, (unsigned long long)s.rx_bytes,
		    (unsigned long long)s.tx_packets, (unsigned long long)s.tx_bytes,
		    (unsigned long long)s.rx_drop_too_big, (unsigned long long)s.rx_drop_hold_full,
		    (unsigned long long)s.rx_drop_backend, (unsigned long long)s.tx_drop_bad_hdr,
		    (unsigned long long)s.tx_drop_backend, (unsigned long long)s.rx_held,
		    (unsigned long long)s.rx_paused);
	}
}

static void on_signal(void *arg, int fd, unsigned events)
{
	struct signalfd_siginfo si;

	(void)arg;
	(void)events;
	if (read(fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (si.ssi_signo == SIGUSR1) {
		log_stats();
		return;
	}
	if (si.ssi_signo == SIGHUP) {
		vt_info("SIGHUP: configuration reload is not supported yet; ignoring");
		return;
	}
	vt_info("%s: shutting down", strsignal((int)si.ssi_signo));
	evl_stop(loop);
}

int main(int argc, char **argv)
{
	sigset_t set;
	int sfd, r, rc = 1;

	r = cfg_parse_args(&cfg, argc, argv, stderr);
	if (r)
		return r > 0 ? 0 : 2;
	vt_log_set_level(cfg.log_level);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGPIPE);
	/* Blocked before any worker starts, so every thread inherits the mask. */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGPIPE);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0 || evl_create(&loop) || evl_add(loop, sfd, EPOLLIN, on_signal, NULL)) {
		vt_err("cannot set up the event loop: %s", strerror(errno));
		return 1;
	}
	for (unsigned i = 0; i < cfg.nports; i++) {
		r = vu_port_create(&ports[i], &cfg.ports[i], loop);
		if (r) {
			vt_err("%s: cannot start (%s)", cfg.ports[i].name, strerror(-r));
			goto out;
		}
		vt_info("%s: %s %s, %s %s, %u queue pair%s", cfg.ports[i].name,
			cfg.ports[i].client ? "connecting to" : "listening on", cfg.ports[i].socket,
			cfg.ports[i].tap[0] ? "tap" : "backend",
			cfg.ports[i].tap[0] ? cfg.ports[i].tap : cfg.ports[i].backend,
			cfg.ports[i].queues, cfg.ports[i].queues > 1 ? "s" : "");
	}
	vt_info("virtap %s running with %u port%s", VIRTAP_VERSION, cfg.nports,
		cfg.nports > 1 ? "s" : "");
	rc = evl_run(loop) ? 1 : 0;
	log_stats();
out:
	for (unsigned i = 0; i < cfg.nports; i++)
		vu_port_destroy(ports[i]);
	evl_destroy(loop);
	close(sfd);
	return rc;
}
