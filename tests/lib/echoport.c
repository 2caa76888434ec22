// SPDX-License-Identifier: MIT
/*
 * Echo ports of a daemon under test (echoport.h). Every wait is bounded by the helpers below it
 * (vufe, vtproc).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "echoport.h"
#include "netns.h"
#include "vtproc.h"

#define EP_MEM (2u << 20)

static uint32_t seq_of(const struct ep *p, uint32_t n)
{
	return (uint32_t)p->id << 24 | (n & 0xffffff);
}

void ep_set_init(struct ep_set *s, struct ep *p, unsigned n, const char *tag)
{
	memset(s, 0, sizeof(*s));
	memset(p, 0, n * sizeof(*p));
	s->p = p;
	s->n = n;
	s->vt = -1;
	snprintf(s->dir, sizeof(s->dir), "/tmp/vt-%.16s-XXXXXX", tag);
	REQUIRE(mkdtemp(s->dir));
	snprintf(s->cfg, sizeof(s->cfg), "%s/virtap.conf", s->dir);
	snprintf(s->cfg_tmp, sizeof(s->cfg_tmp), "%s/virtap.conf.new", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/virtap.log", s->dir);
	for (unsigned i = 0; i < n; i++) {
		p[i].id = i;
		p[i].fe.sock = -1;
	}
}

void ep_name(struct ep_set *s, unsigned i, const char *name)
{
	struct ep *p = &s->p[i];

	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->sock, sizeof(p->sock), "%s/%s.sock", s->dir, p->name);
}

void ep_write_config(struct ep_set *s)
{
	FILE *f = fopen(s->cfg_tmp, "we");

	REQUIRE(f);
	fprintf(f, "# written by the test\nlog-level = info\n");
	for (unsigned i = 0; i < s->n; i++)
		if (s->p[i].present)
			fprintf(f, "\n[port %s]\nsocket = %s\nbackend = echo\n%s", s->p[i].name,
				s->p[i].sock, s->p[i].extra);
	REQUIRE(fclose(f) == 0);
	REQUIRE(rename(s->cfg_tmp, s->cfg) == 0);
}

static bool sockets_settle(struct ep_set *s, int ms)
{
	bool ok = true;

	for (unsigned i = 0; i < s->n; i++)
		ok &= vtproc_wait_path(s->p[i].sock, s->p[i].present, ms);
	return ok;
}

bool ep_reload(struct ep_set *s)
{
	ep_write_config(s);
	REQUIRE(kill(s->vt, SIGHUP) == 0);
	return sockets_settle(s, 5000);
}

bool ep_daemon_start(struct ep_set *s)
{
	const char *args[] = {"--config", s->cfg, NULL};

	ep_write_config(s);
	s->vt = vtproc_start(s->log, args);
	return s->vt > 0 && sockets_settle(s, 10000);
}

bool ep_up(struct ep_set *s, unsigned i)
{
	struct ep *p = &s->p[i];
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};

	p->sent = p->rcvd = 0;
	p->connected = vufe_connect_opts(&p->fe, p->sock, EP_MEM, &o) == 0 &&
		       vufe_post_rx(&p->fe, 128, VUFE_BUF) == 128;
	if (!p->connected)
		vufe_close(&p->fe);
	return p->connected;
}

void ep_down(struct ep_set *s, unsigned i)
{
	vufe_close(&s->p[i].fe);
	s->p[i].connected = false;
}

bool ep_send(struct ep_set *s, unsigned i, unsigned n)
{
	struct ep *p = &s->p[i];

	vufe_reap_tx(&p->fe, 0);
	for (unsigned k = 0; k < n; k++)
		if (vufe_echo_send(&p->fe, seq_of(p, p->sent++)) < 0)
			return false;
	return true;
}

bool ep_recv_all(struct ep_set *s, unsigned i)
{
	struct ep *p = &s->p[i];

	while (p->rcvd != p->sent)
		if (!vufe_echo_expect(&p->fe, seq_of(p, p->rcvd++), p->name))
			return false;
	return vufe_echo_settle(&p->fe);
}

unsigned ep_traffic(struct ep_set *s, unsigned n, unsigned *tried)
{
	unsigned ok = 0, t = 0;
	bool *sent = calloc(s->n, sizeof(*sent));

	REQUIRE(sent);
	for (unsigned i = 0; i < s->n; i++)
		sent[i] = s->p[i].connected && ep_send(s, i, n);
	for (unsigned i = 0; i < s->n; i++) {
		if (!s->p[i].connected)
			continue;
		t++;
		if (sent[i] && ep_recv_all(s, i))
			ok++;
		else
			fprintf(stderr, "  traffic failed on %s\n", s->p[i].name);
	}
	free(sent);
	if (tried)
		*tried = t;
	return ok;
}

void ep_set_fini(struct ep_set *s)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->p[i].connected)
			ep_down(s, i);
	unlink(s->cfg);
	unlink(s->log);
	rmdir(s->dir);
}
