// SPDX-License-Identifier: MIT
/*
 * virtap daemon: parse the configuration, create the ports on one control-plane event loop, run
 * until SIGINT/SIGTERM, tear everything down. The datapath runs on the ports' worker threads.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "config.h"
#include "virtap/evl.h"
#include "virtap/gmem_guard.h"
#include "virtap/log.h"
#include "virtap/vu.h"
#include "virtap/wrk.h"

/*
 * Workers that ports share by name (worker=NAME). One is made when a configuration first names
 * it, carried over a reload while the new configuration still names it with the same busy-poll
 * (so the ports kept on it are not touched), and destroyed once no port of the running
 * configuration names it, after its ports have stopped.
 */
struct shared_wrk {
	char name[16];
	unsigned poll_us;
	struct wrk *w;
};

static struct daemon_config cfg;
static struct vu_port *ports[CFG_MAX_PORTS];
static struct shared_wrk shared[CFG_MAX_PORTS];
static unsigned nshared;
static struct evl *loop;

static struct shared_wrk *shared_find(struct shared_wrk *tab, unsigned n, const char *name,
				      unsigned poll_us)
{
	for (unsigned i = 0; i < n; i++)
		if (tab[i].w && !strcmp(tab[i].name, name) && tab[i].poll_us == poll_us)
			return &tab[i];
	return NULL;
}

static struct wrk *shared_make(const char *name, unsigned poll_us)
{
	struct wrk *w;
	char tname[16];
	int err;

	snprintf(tname, sizeof(tname), "vtw-%.11s", name);
	err = wrk_create(&w, tname);
	if (err)
		goto fail;
	err = wrk_start(w);
	if (!err && poll_us)
		err = wrk_set_busy_poll(w, poll_us);
	if (!err)
		return w;
	wrk_destroy(w);
fail:
	vt_err("worker %s: cannot start it (%s); its ports get a worker each", name,
	       strerror(-err));
	return NULL;
}

/* Point every port of d that names a worker at it, in tab (*n entries): the worker of the same
 * name and busy-poll from old (moved out of it), else a new one. */
static void shared_bind(struct daemon_config *d, struct shared_wrk *tab, unsigned *n,
			struct shared_wrk *old, unsigned nold)
{
	*n = 0;
	for (unsigned i = 0; i < d->nports; i++) {
		struct vu_port_config *pc = &d->ports[i];
		struct shared_wrk *s, *o;

		pc->worker = NULL;
		if (!pc->worker_name[0])
			continue;
		s = shared_find(tab, *n, pc->worker_name, pc->busy_poll_us);
		if (!s) {
			o = shared_find(old, nold, pc->worker_name, pc->busy_poll_us);
			s = &tab[(*n)++];
			snprintf(s->name, sizeof(s->name), "%s", pc->worker_name);
			s->poll_us = pc->busy_poll_us;
			s->w = o ? o->w : shared_make(pc->worker_name, pc->busy_poll_us);
			if (o)
				o->w = NULL;
		}
		pc->worker = s->w;
	}
}

/* After the ports on them have stopped. */
static void shared_free(struct shared_wrk *tab, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (tab[i].w)
			wrk_destroy(tab[i].w);
		tab[i].w = NULL;
	}
}

static void log_stats(void)
{
	for (unsigned i = 0; i < cfg.nports; i++) {
		const struct vu_port_config *pc = &cfg.ports[i];
		struct vnet_stats s;

		if (!ports[i])
			continue;
		vu_port_stats(ports[i], &s);
		vt_info(
		    "%s: %s rx %llu pkts %llu bytes, tx %llu pkts %llu bytes, drops rx "
		    "too-big %llu hold-full %llu backend %llu, tx bad-hdr %llu backend %llu, "
		    "held %llu, paused %llu%s%s",
		    vu_port_name(ports[i]), vu_port_connected(ports[i]) ? "up" : "waiting",
		    (unsigned long long)s.rx_packets, (unsigned long long)s.rx_bytes,
		    (unsigned long long)s.tx_packets, (unsigned long long)s.tx_bytes,
		    (unsigned long long)s.rx_drop_too_big, (unsigned long long)s.rx_drop_hold_full,
		    (unsigned long long)s.rx_drop_backend, (unsigned long long)s.tx_drop_bad_hdr,
		    (unsigned long long)s.tx_drop_backend, (unsigned long long)s.rx_held,
		    (unsigned long long)s.rx_paused, pc->worker ? ", on shared worker " : "",
		    pc->worker ? pc->worker_name : "");
		for (unsigned q = 0; vu_port_queues(ports[i]) > 1 && q < vu_port_queues(ports[i]);
		     q++) {
			vu_port_qp_stats(ports[i], q, &s);
			vt_info("%s: qp%u rx %llu pkts %llu bytes, tx %llu pkts %llu bytes",
				vu_port_name(ports[i]), q, (unsigned long long)s.rx_packets,
				(unsigned long long)s.rx_bytes, (unsigned long long)s.tx_packets,
				(unsigned long long)s.tx_bytes);
		}
	}
}

static int saved_argc;
static char **saved_argv;

static int start_port(struct vu_port **out, const struct vu_port_config *pc)
{
	int r = vu_port_create(out, pc, loop);

	if (r) {
		vt_err("%s: cannot start (%s)", pc->name, strerror(-r));
		return r;
	}
	vt_info("%s: %s %s, %s %s, %u queue pair%s%s%s", pc->name,
		pc->client ? "connecting to" : "listening on", pc->socket,
		pc->tap[0] ? "tap" : "backend", pc->tap[0] ? pc->tap : pc->backend, pc->queues,
		pc->queues > 1 ? "s" : "", pc->worker ? ", on shared worker " : "",
		pc->worker ? pc->worker_name : "");
	return 0;
}

static int find_port(const struct daemon_config *d, const char *name)
{
	for (unsigned i = 0; i < d->nports; i++)
		if (!strcmp(d->ports[i].name, name))
			return (int)i;
	return -1;
}

/*
 * SIGHUP: read the command line (and so the config file) again. Ports that kept their name and
 * settings are not touched, their guests see nothing; removed ports stop, new ones start, and a
 * port whose settings changed restarts alone. A configuration with errors changes nothing.
 */
static void reload(void)
{
	static struct daemon_config next;
	static struct shared_wrk next_shared[CFG_MAX_PORTS];
	struct vu_port *next_ports[CFG_MAX_PORTS] = {0};
	unsigned kept = 0, added = 0, removed = 0, restarted = 0, nnext;

	if (cfg_parse_args(&next, saved_argc, saved_argv, stderr) != 0) {
		vt_err("SIGHUP: the new configuration has errors (see above); keeping the old one");
		return;
	}
	/* Before any port stops: a kept port's worker moves to the new table untouched. */
	shared_bind(&next, next_shared, &nnext, shared, nshared);
	for (unsigned i = 0; i < cfg.nports; i++) {
		int j = find_port(&next, cfg.ports[i].name);

		if (j >= 0 && cfg_port_equal(&cfg.ports[i], &next.ports[j])) {
			next_ports[j] = ports[i];
			ports[i] = NULL;
			kept++;
			continue;
		}
		vt_info("%s: %s", cfg.ports[i].name,
			j >= 0 ? "settings changed; restarting it"
			       : "removed from the configuration");
		vu_port_destroy(ports[i]);
		ports[i] = NULL;
		j >= 0 ? restarted++ : removed++;
	}
	for (unsigned j = 0; j < next.nports; j++) {
		if (next_ports[j])
			continue;
		if (start_port(&next_ports[j], &next.ports[j]) == 0 &&
		    find_port(&cfg, next.ports[j].name) < 0)
			added++;
	}
	/* Whatever was not carried over has no port left on it. */
	shared_free(shared, nshared);
	cfg = next;
	memcpy(ports, next_ports, sizeof(ports));
	memcpy(shared, next_shared, sizeof(shared));
	nshared = nnext;
	vt_log_set_level(cfg.log_level);
	vt_info("SIGHUP: configuration reloaded: %u kept, %u added, %u removed, %u restarted", kept,
		added, removed, restarted);
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
		reload();
		return;
	}
	vt_info("%s: shutting down", strsignal((int)si.ssi_signo));
	evl_stop(loop);
}

/*
 * Every frontend passes fds (a kick and a call eventfd per ring, memory regions until mapped), and
 * one that runs us out of them would starve the other ports: take the hard limit, not the
 * default soft limit of 1024.
 */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		vt_warn("cannot raise the open file limit to %llu: %s",
			(unsigned long long)rl.rlim_max, strerror(errno));
}

int main(int argc, char **argv)
{
	sigset_t set;
	int sfd, r, rc = 1;

	r = cfg_parse_args(&cfg, argc, argv, stderr);
	if (r)
		return r > 0 ? 0 : 2;
	vt_log_set_level(cfg.log_level);
	/* A frontend that shrinks memory it shares with us breaks its own port, not the daemon. */
	r = gmem_guard_install();
	if (r)
		vt_warn("SIGBUS guard not installed (%s): a frontend that truncates its shared "
			"memory can stop the daemon",
			r == -EBUSY ? "another handler keeps SIGBUS, e.g. a sanitizer with "
				      "allow_user_segv_handler=0"
				    : strerror(-r));
	raise_nofile();
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
	saved_argc = argc;
	saved_argv = argv;
	shared_bind(&cfg, shared, &nshared, NULL, 0);
	for (unsigned i = 0; i < cfg.nports; i++)
		if (start_port(&ports[i], &cfg.ports[i]))
			goto out;
	vt_info("virtap %s running with %u port%s", VIRTAP_VERSION, cfg.nports,
		cfg.nports > 1 ? "s" : "");
	rc = evl_run(loop) ? 1 : 0;
	log_stats();
out:
	for (unsigned i = 0; i < cfg.nports; i++)
		vu_port_destroy(ports[i]);
	shared_free(shared, nshared);
	evl_destroy(loop);
	close(sfd);
	return rc;
}
