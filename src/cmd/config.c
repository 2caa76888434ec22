// SPDX-License-Identifier: MIT
/*
 * Configuration parsing for the virtap daemon. Pure string handling: no sockets, no TAPs, so the
 * tests can feed it anything.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "virtap/log.h"
#include "virtap/membe.h"

void cfg_usage(FILE *out)
{
	fputs(
	    "Usage: virtap --socket PATH --tap NAME [options]\n"
	    "       virtap --port socket=PATH,tap=NAME[,key=value...] [--port ...]\n"
	    "       virtap --config FILE\n"
	    "\n"
	    "A vhost-user net backend: QEMU (or any vhost-user frontend) shares the guest's\n"
	    "memory and virtqueues over a Unix socket; virtap moves the packets between those\n"
	    "virtqueues and a Linux TAP device on worker threads.\n"
	    "\n"
	    "Port options (for the single port given by --socket/--tap):\n"
	    "  -s, --socket PATH       vhost-user socket path\n"
	    "  -t, --tap NAME          TAP interface; created if missing, brought up\n"
	    "  -c, --client            connect to PATH (frontend started with server=on)\n"
	    "                          instead of listening on it\n"
	    "      --reconnect-ms MS   client mode: retry interval (default 1000)\n"
	    "  -q, --queues N          queue pairs offered, 1-16 (default 1; >1 opens a\n"
	    "                          multiqueue TAP)\n"
	    "  -m, --mtu M             set the TAP MTU and offer VIRTIO_NET_F_MTU\n"
	    "  -b, --budget N          packets per handler run before yielding (default 128,\n"
	    "                          at most half the ring)\n"
	    "      --threads MODE      'port': one worker thread per port (default);\n"
	    "                          'queue': one per queue pair\n"
	    "      --hold N            frames held per RX queue while the guest has no buffers\n"
	    "                          (default 32)\n"
	    "      --pad-short         pad frames shorter than 60 bytes\n"
	    "      --name NAME         port name used in logs (default port0)\n"
	    "      --busy-poll US      workers poll rings without sleeping while traffic flows,\n"
	    "                          back to notifications after US microseconds idle (0: off)\n"
	    "      --backend B         tap (default); sink, source[:LEN] or echo: in-memory\n"
	    "                          backends that drop, generate or reflect frames (for\n"
	    "                          benchmarks; no TAP needed)\n"
	    "      --worker NAME       serve the port on the worker thread NAME, shared by\n"
	    "                          every port that names it (one polling CPU for many\n"
	    "                          ports); those ports need the same --busy-poll\n"
	    "\n"
	    "Daemon options:\n"
	    "  -p, --port SPEC         add a port: comma-separated key=value with the keys\n"
	    "                          socket, tap, client, reconnect-ms, queues, mtu, budget,\n"
	    "                          threads, hold, pad-short, name, busy-poll,\n"
	    "                          backend, worker (repeatable)\n"
	    "  -f, --config FILE       read ports from FILE (see the README)\n"
	    "  -l, --log-level LEVEL   err, warn, info (default) or debug\n"
	    "  -h, --help              this text\n"
	    "  -V, --version           version\n"
	    "\n"
	    "Signals: SIGINT/SIGTERM stop cleanly; SIGHUP re-reads the configuration (unchanged\n"
	    "ports keep running untouched); SIGUSR1 logs every port's counters.\n",
	    out);
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || s[0] == '-' || v < lo || v > hi)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	if (!s || !strcmp(s, "yes") || !strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "on"))
		*out = true;
	else if (!strcmp(s, "no") || !strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "off"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

static int copy_str(char *dst, size_t cap, const char *s)
{
	if (!s || !*s || strlen(s) >= cap)
		return -EINVAL;
	memcpy(dst, s, strlen(s) + 1);
	return 0;
}

int cfg_port_set(struct vu_port_config *p, const char *key, const char *val, const char *where,
		 FILE *err)
{
	unsigned u;
	int r = -EINVAL;
	const char *want = "";

	if (!strcmp(key, "socket")) {
		want = "a path shorter than 108 bytes";
		r = copy_str(p->socket, sizeof(p->socket), val);
	} else if (!strcmp(key, "tap")) {
		want = "an interface name of 1-15 characters";
		r = copy_str(p->tap, sizeof(p->tap), val);
	} else if (!strcmp(key, "name")) {
		want = "a name of 1-31 characters";
		r = copy_str(p->name, sizeof(p->name), val);
	} else if (!strcmp(key, "client")) {
		want = "yes or no";
		r = parse_bool(val, &p->client);
	} else if (!strcmp(key, "pad-short")) {
		want = "yes or no";
		r = parse_bool(val, &p->net.pad_short);
	} else if (!strcmp(key, "reconnect-ms")) {
		want = "10-600000";
		r = parse_uint(val, 10, 600000, &p->reconnect_ms);
	} else if (!strcmp(key, "queues")) {
		want = "1-16";
		r = parse_uint(val, 1, VNET_MAX_QUEUE_PAIRS, &p->queues);
	} else if (!strcmp(key, "mtu")) {
		want = "68-65535";
		r = parse_uint(val, 68, 65535, &p->mtu);
	} else if (!strcmp(key, "budget")) {
		want = "1-65536";
		r = parse_uint(val, 1, 65536, &u);
		if (!r)
			p->net.rx_budget_pkts = p->net.tx_budget_pkts = u;
	} else if (!strcmp(key, "hold")) {
		want = "1-4096";
		r = parse_uint(val, 1, 4096, &p->net.hold_frames);
	} else if (!strcmp(key, "busy-poll")) {
		want = "0-1000000 microseconds";
		r = parse_uint(val, 0, 1000000, &p->busy_poll_us);
	} else if (!strcmp(key, "backend")) {
		enum membe_mode mode;
		size_t len;

		want = "tap, sink, source[:LEN] (60-65553) or echo";
		if (val && (!strcmp(val, "tap") || membe_parse(val, &mode, &len) == 0))
			r = copy_str(p->backend, sizeof(p->backend), val);
	} else if (!strcmp(key, "worker")) {
		want = "a worker name of 1-15 letters, digits, '-' or '_'";
		if (val && val[strspn(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					   "0123456789-_")] == 0)
			r = copy_str(p->worker_name, sizeof(p->worker_name), val);
	} else if (!strcmp(key, "threads")) {
		want = "port or queue";
		if (val && !strcmp(val, "port")) {
			p->threads = VU_THREADS_PORT;
			r = 0;
		} else if (val && !strcmp(val, "queue")) {
			p->threads = VU_THREADS_QUEUE;
			r = 0;
		}
	} else {
		fprintf(err, "virtap: %s: unknown setting '%s'\n", where, key);
		return -EINVAL;
	}
	if (r)
		fprintf(err, "virtap: %s: '%s' wants %s, not '%s'\n", where, key, want,
			val ? val : "(nothing)");
	return r;
}

static struct vu_port_config *new_port(struct daemon_config *d, FILE *err)
{
	struct vu_port_config *p;

	if (d->nports == CFG_MAX_PORTS) {
		fprintf(err, "virtap: more than %d ports\n", CFG_MAX_PORTS);
		return NULL;
	}
	p = &d->ports[d->nports++];
	vu_port_config_default(p);
	snprintf(p->name, sizeof(p->name), "port%u", d->nports - 1);
	return p;
}

static int parse_port_spec(struct daemon_config *d, const char *spec, FILE *err)
{
	struct vu_port_config *p = new_port(d, err);
	char buf[1024], *save = NULL;

	if (!p)
		return -EINVAL;
	if (strlen(spec) >= sizeof(buf)) {
		fprintf(err, "virtap: --port: specification too long\n");
		return -EINVAL;
	}
	strcpy(buf, spec);
	for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');

		if (eq)
			*eq++ = 0;
		if (cfg_port_set(p, kv, eq, "--port", err))
			return -EINVAL;
	}
	return 0;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

/* After a line that filled the buffer: true if it really went on (the rest is skipped). */
static bool skip_rest(FILE *f)
{
	int ch = fgetc(f);

	if (ch == EOF || ch == '\n')
		return false;
	while ((ch = fgetc(f)) != EOF && ch != '\n')
		;
	return true;
}

int cfg_load_file(struct daemon_config *d, const char *path, FILE *err)
{
	struct vu_port_config *p = NULL;
	char line[1024], where[300];
	unsigned n = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(err, "virtap: cannot read config file %s: %s\n", path, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		/* The rest of a long line belongs to it, not to the next line. */
		bool cut = len == sizeof(line) - 1 && line[len - 1] != '\n' && skip_rest(f);
		char *s = trim(line), *eq;

		snprintf(where, sizeof(where), "%s:%u", path, ++n);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (cut) {
			fprintf(err, "virtap: %s: line longer than %zu bytes\n", where,
				sizeof(line) - 2);
			goto err;
		}
		if (*s == '[') {
			char *end = strchr(s, ']');

			if (!end || strncmp(s, "[port", 5) != 0) {
				fprintf(err, "virtap: %s: expected a [port NAME] section\n", where);
				goto err;
			}
			*end = 0;
			p = new_port(d, err);
			if (!p)
				goto err;
			s = trim(s + 5);
			if (*s && copy_str(p->name, sizeof(p->name), s)) {
				fprintf(err, "virtap: %s: port name too long\n", where);
				goto err;
			}
			continue;
		}
		eq = strchr(s, '=');
		if (!eq) {
			fprintf(err, "virtap: %s: expected key = value\n", where);
			goto err;
		}
		*eq = 0;
		if (!p) {
			if (!strcmp(trim(s), "log-level")) {
				int lvl = vt_log_parse_level(trim(eq + 1));

				if (lvl < 0) {
					fprintf(err, "virtap: %s: unknown log level\n", where);
					goto err;
				}
				d->log_level = lvl;
				continue;
			}
			fprintf(err, "virtap: %s: setting outside a [port NAME] section\n", where);
			goto err;
		}
		if (cfg_port_set(p, trim(s), trim(eq + 1), where, err))
			goto err;
	}
	fclose(f);
	return 0;
err:
	fclose(f);
	return -EINVAL;
}

static int check_ports(const struct daemon_config *d, FILE *err)
{
	if (!d->nports) {
		fprintf(err, "virtap: no port given (use --socket and --tap, --port or --config; "
			     "see --help)\n");
		return -EINVAL;
	}
	for (unsigned i = 0; i < d->nports; i++) {
		const struct vu_port_config *p = &d->ports[i];

		bool tap = !p->backend[0] || !strcmp(p->backend, "tap");

		if (!p->socket[0] || (tap && !p->tap[0])) {
			fprintf(err, "virtap: port %s needs both a socket and a tap\n", p->name);
			return -EINVAL;
		}
		if (p->worker_name[0] && p->threads != VU_THREADS_PORT) {
			fprintf(err,
				"virtap: port %s: worker=%s serves whole ports; it cannot go with "
				"threads=queue\n",
				p->name, p->worker_name);
			return -EINVAL;
		}
		for (unsigned j = 0; j < i; j++) {
			const struct vu_port_config *q = &d->ports[j];

			if (p->worker_name[0] && !strcmp(p->worker_name, q->worker_name) &&
			    p->busy_poll_us != q->busy_poll_us) {
				fprintf(err,
					"virtap: ports %s and %s share worker %s but ask for "
					"busy-poll %u and %u; give them the same\n",
					q->name, p->name, p->worker_name, q->busy_poll_us,
					p->busy_poll_us);
				return -EINVAL;
			}
		}
		for (unsigned j = 0; j < i; j++) {
			if (!strcmp(p->socket, d->ports[j].socket) ||
			    (p->tap[0] && !strcmp(p->tap, d->ports[j].tap)) ||
			    !strcmp(p->name, d->ports[j].name)) {
				fprintf(err,
					"virtap: ports %s and %s share a socket, tap or name\n",
					d->ports[j].name, p->name);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int cfg_parse_args(struct daemon_config *d, int argc, char **argv, FILE *err)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"tap", required_argument, NULL, 't'},
	    {"client", no_argument, NULL, 'c'},
	    {"queues", required_argument, NULL, 'q'},
	    {"mtu", required_argument, NULL, 'm'},
	    {"budget", required_argument, NULL, 'b'},
	    {"port", required_argument, NULL, 'p'},
	    {"config", required_argument, NULL, 'f'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {"threads", required_argument, NULL, 1000},
	    {"hold", required_argument, NULL, 1001},
	    {"pad-short", no_argument, NULL, 1002},
	    {"reconnect-ms", required_argument, NULL, 1003},
	    {"name", required_argument, NULL, 1004},
	    {"busy-poll", required_argument, NULL, 1005},
	    {"backend", required_argument, NULL, 1006},
	    {"worker", required_argument, NULL, 1007},
	    {0},
	};
	struct vu_port_config single;
	bool have_single = false;
	char first_flag[32] = ""; /* the first --socket/--tap port option given, for errors */
	int c, lvl;

	memset(d, 0, sizeof(*d));
	d->log_level = VT_LOG_INFO;
	vu_port_config_default(&single);
	/* 0, not 1: glibc then also forgets where it stood inside an earlier argv's "-abc". */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":s:t:cq:m:b:p:f:l:hV", opts, NULL)) != -1) {
		const char *key = NULL, *val = optarg;

		switch (c) {
		case 's':
			key = "socket";
			break;
		case 't':
			key = "tap";
			break;
		case 'c':
			key = "client";
			val = "yes";
			break;
		case 'q':
			key = "queues";
			break;
		case 'm':
			key = "mtu";
			break;
		case 'b':
			key = "budget";
			break;
		case 1000:
			key = "threads";
			break;
		case 1001:
			key = "hold";
			break;
		case 1002:
			key = "pad-short";
			val = "yes";
			break;
		case 1003:
			key = "reconnect-ms";
			break;
		case 1004:
			key = "name";
			break;
		case 1005:
			key = "busy-poll";
			break;
		case 1006:
			key = "backend";
			break;
		case 1007:
			key = "worker";
			break;
		case 'p':
			if (parse_port_spec(d, optarg, err))
				return -EINVAL;
			continue;
		case 'f':
			if (cfg_load_file(d, optarg, err))
				return -EINVAL;
			snprintf(d->config_file, sizeof(d->config_file), "%s", optarg);
			continue;
		case 'l':
			lvl = vt_log_parse_level(optarg);
			if (lvl < 0) {
				fprintf(err,
					"virtap: --log-level wants err, warn, info or debug\n");
				return -EINVAL;
			}
			d->log_level = lvl;
			continue;
		case 'h':
			cfg_usage(stdout);
			return 1;
		case 'V':
			printf("virtap %s\n", VIRTAP_VERSION);
			return 1;
		case ':':
			fprintf(err, "virtap: option %s needs a value (see --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		default:
			/* A short option may sit inside "-xyz", where optind has not moved on. */
			if (optopt)
				fprintf(err, "virtap: unknown option -%c (see --help)\n", optopt);
			else
				fprintf(err, "virtap: unknown option %s (see --help)\n",
					argv[optind - 1]);
			return -EINVAL;
		}
		char flag[32];

		snprintf(flag, sizeof(flag), "--%s", key);
		if (cfg_port_set(&single, key, val, flag, err))
			return -EINVAL;
		if (!have_single)
			snprintf(first_flag, sizeof(first_flag), "%s", flag);
		have_single = true;
	}
	if (optind < argc) {
		fprintf(err, "virtap: unexpected argument '%s' (see --help)\n", argv[optind]);
		return -EINVAL;
	}
	if (have_single && !single.socket[0] && d->nports) {
		/* "--port ... --busy-poll 200": the flag describes the --socket/--tap port, which
		 * is not there; say where the setting goes instead of "port1 needs a socket". */
		fprintf(
		    err,
		    "virtap: %s belongs to the port given by --socket/--tap, but no --socket was "
		    "given; for a --port or --config port put it in that port's spec (%s=VALUE)\n",
		    first_flag, first_flag + 2);
		return -EINVAL;
	}
	if (have_single) {
		if (d->nports == CFG_MAX_PORTS) {
			fprintf(err, "virtap: more than %d ports\n", CFG_MAX_PORTS);
			return -EINVAL;
		}
		if (!strcmp(single.name, "port0") && d->nports)
			snprintf(single.name, sizeof(single.name), "port%u", d->nports);
		d->ports[d->nports++] = single;
	}
	return check_ports(d, err);
}

bool cfg_port_equal(const struct vu_port_config *a, const struct vu_port_config *b)
{
	const struct vnet_config *x = &a->net, *y = &b->net;

	return !strcmp(a->name, b->name) && !strcmp(a->socket, b->socket) &&
	       !strcmp(a->tap, b->tap) && !strcmp(a->backend, b->backend) &&
	       a->client == b->client && a->reconnect_ms == b->reconnect_ms &&
	       a->queues == b->queues && a->mtu == b->mtu && a->threads == b->threads &&
	       a->busy_poll_us == b->busy_poll_us && !strcmp(a->worker_name, b->worker_name) &&
	       x->rx_budget_pkts == y->rx_budget_pkts && x->rx_budget_bytes == y->rx_budget_bytes &&
	       x->tx_budget_pkts == y->tx_budget_pkts && x->tx_budget_bytes == y->tx_budget_bytes &&
	       x->hold_frames == y->hold_frames && x->rx_cover == y->rx_cover &&
	       x->pad_short == y->pad_short;
}
