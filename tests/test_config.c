// SPDX-License-Identifier: MIT
/* The daemon's option and config-file parser (src/cmd/config.c): return codes, and error
 * messages that name the flag, key, value or line at fault. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "../src/cmd/config.h"
#include "netns.h"
#include "virtap/log.h"

static struct daemon_config d;
static char err[4096], out[4096], path[64];

/* Run cfg_parse_args on the NULL-terminated arguments; its error text lands in err and what it
 * prints on stdout (help, version) in out. */
static int parse(const char *arg, ...)
{
	char *argv[80], *buf = NULL;
	int argc = 0, r, saved;
	size_t len = 0;
	FILE *e = open_memstream(&buf, &len), *o = tmpfile();
	va_list ap;

	REQUIRE(e && o);
	argv[argc++] = "virtap";
	va_start(ap, arg);
	for (const char *a = arg; a; a = va_arg(ap, const char *)) {
		if (argc == 79)
			abort(); /* test bug */
		argv[argc++] = (char *)a;
	}
	va_end(ap);
	argv[argc] = NULL;
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	dup2(fileno(o), STDOUT_FILENO);
	r = cfg_parse_args(&d, argc, argv, e);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	fclose(e);
	snprintf(err, sizeof(err), "%s", buf);
	free(buf);
	memset(out, 0, sizeof(out));
	rewind(o);
	len = fread(out, 1, sizeof(out) - 1, o);
	fclose(o);
	return r;
}

static bool err_has(const char *a, const char *b)
{
	bool ok = strstr(err, a) && (!b || strstr(err, b));

	if (!ok)
		fprintf(stderr, "  error text \"%s\" lacks \"%s\"%s%s\n", err, a, b ? " or " : "",
			b ? b : "");
	return ok;
}

/* Rejected with -EINVAL and a message naming a (and b). */
#define BAD(a, b, ...) CHECK(parse(__VA_ARGS__, NULL) == -EINVAL && err_has(a, b))
/* Accepted, nothing printed on the error stream. */
#define GOOD(...) CHECK(parse(__VA_ARGS__, NULL) == 0 && err[0] == 0)

static void test_args_good(void)
{
	struct vu_port_config *p = &d.ports[0];

	GOOD("--socket", "/tmp/a.sock", "--tap", "vt0");
	CHECK(d.nports == 1 && !strcmp(p->socket, "/tmp/a.sock") && !strcmp(p->tap, "vt0"));
	CHECK(!strcmp(p->name, "port0") && p->queues == 1 && !p->client && p->mtu == 0);
	CHECK(p->threads == VU_THREADS_PORT && d.log_level == VT_LOG_INFO);

	GOOD("-s", "/x", "-t", "t0", "-c", "--reconnect-ms", "50", "-q", "4", "-m", "9000", "-b",
	     "64", "--threads", "queue", "--hold", "8", "--pad-short", "--name", "web", "-l",
	     "debug");
	CHECK(d.nports == 1 && p->client && p->reconnect_ms == 50 && p->queues == 4);
	CHECK(p->mtu == 9000 && p->net.rx_budget_pkts == 64 && p->net.tx_budget_pkts == 64);
	CHECK(p->threads == VU_THREADS_QUEUE && p->net.hold_frames == 8 && p->net.pad_short);
	CHECK(!strcmp(p->name, "web") && d.log_level == VT_LOG_DEBUG);

	GOOD("--client", "--socket=/y", "--tap=t1", "--threads=port", "--queues=16");
	CHECK(p->client && p->threads == VU_THREADS_PORT && p->queues == 16);

	/* Range ends are accepted. */
	GOOD("-s", "/a", "-t", "t", "--mtu", "68", "--budget", "1");
	CHECK(p->mtu == 68 && p->net.rx_budget_pkts == 1);
	GOOD("-s", "/a", "-t", "t", "--mtu", "65535", "--budget", "65536", "-q", "1");
	CHECK(p->mtu == 65535 && p->net.tx_budget_pkts == 65536);

	/* --port specs, and a single port after them takes the next free name. */
	GOOD("--port", "socket=/a,tap=ta,queues=2,threads=queue,client,name=p", "-p",
	     "socket=/b,tap=tb,mtu=1500,client=no", "-s", "/c", "-t", "tc");
	CHECK(d.nports == 3);
	CHECK(!strcmp(d.ports[0].name, "p") && d.ports[0].queues == 2 && d.ports[0].client &&
	      d.ports[0].threads == VU_THREADS_QUEUE);
	CHECK(!strcmp(d.ports[1].name, "port1") && d.ports[1].mtu == 1500 && !d.ports[1].client);
	CHECK(!strcmp(d.ports[2].name, "port2") && !strcmp(d.ports[2].socket, "/c") &&
	      !strcmp(d.ports[2].tap, "tc"));

	/* Ports sharing a worker, and one with its own. */
	GOOD("-p", "socket=/a,tap=ta,worker=w0,busy-poll=200", "-p",
	     "socket=/b,tap=tb,worker=w0,busy-poll=200", "-p", "socket=/c,tap=tc,worker=w_1-x",
	     "-s", "/d", "-t", "td", "--worker", "w0", "--busy-poll", "200");
	CHECK(d.nports == 4 && !strcmp(d.ports[0].worker_name, "w0") &&
	      !strcmp(d.ports[1].worker_name, "w0") && !strcmp(d.ports[2].worker_name, "w_1-x") &&
	      !strcmp(d.ports[3].worker_name, "w0") && d.ports[3].busy_poll_us == 200);
	GOOD("-s", "/a", "-t", "t");
	CHECK(!d.ports[0].worker_name[0] && !d.ports[0].worker);
}

static void test_args_bad(void)
{
	/* What is missing. */
	BAD("tap", NULL, "--socket", "/tmp/a.sock");
	BAD("socket", NULL, "--tap", "vt0");
	BAD("no port", NULL, "-l", "info");
	BAD("tap", "port1", "-p", "socket=/a,tap=t0", "-p", "socket=/b");
	/* A port option outside --port, with no --socket port to belong to: where it goes. */
	BAD("--busy-poll belongs to the port given by --socket/--tap", "busy-poll=VALUE", "-p",
	    "socket=/a,tap=t0", "--busy-poll", "200");
	BAD("--mtu belongs to", "mtu=VALUE", "--mtu", "9000", "-p", "socket=/a,tap=t0");

	/* --queues. */
	BAD("--queues", "'0'", "-s", "/a", "-t", "t", "--queues", "0");
	BAD("--queues", "'17'", "-s", "/a", "-t", "t", "-q", "17");
	BAD("--queues", "'2x'", "-s", "/a", "-t", "t", "-q", "2x");
	BAD("--queues", "'-1'", "-s", "/a", "-t", "t", "-q", "-1");
	BAD("--queues", "''", "-s", "/a", "-t", "t", "--queues=");
	BAD("--queues", "needs a value", "-s", "/a", "-t", "t", "--queues");
	BAD("-q", "needs a value", "-s", "/a", "-t", "t", "-q");

	/* Unknown options and stray arguments. */
	BAD("--bogus", NULL, "-s", "/a", "-t", "t", "--bogus");
	BAD("--bogus", NULL, "--bogus=1", "-s", "/a", "-t", "t");
	BAD("-Z", NULL, "-s", "/a", "-t", "t", "-Z");
	BAD("-Z", NULL, "-s", "/a", "-t", "t", "-cZ");
	BAD("-Z", NULL, "-s", "/a", "-t", "t", "-Zc");
	BAD("'extra'", NULL, "-s", "/a", "-t", "t", "extra");

	/* --port. */
	BAD("--port", "'colour'", "--port", "socket=/a,tap=t0,colour=blue");
	BAD("--port", "'99'", "--port", "socket=/a,tap=t0,queues=99");
	BAD("--port", "'maybe'", "--port", "socket=/a,tap=t0,client=maybe");
	BAD("--port", "''", "--port", "=x,socket=/a,tap=t0");
	BAD("--port", "needs a value", "--port");

	/* Two ports on one socket, one TAP or one name. */
	BAD("port0", "port1", "-p", "socket=/a,tap=t0", "-p", "socket=/a,tap=t1");
	BAD("port0", "port1", "-p", "socket=/a,tap=t0", "-s", "/a", "-t", "t1");
	BAD("port0", "port1", "-p", "socket=/a,tap=t0", "-p", "socket=/b,tap=t0");
	BAD("ports x and x", "share", "-p", "socket=/a,tap=t0,name=x", "-p",
	    "socket=/b,tap=t1,name=x");

	/* --threads, --budget, --mtu and the other values. */
	BAD("--threads", "'core'", "-s", "/a", "-t", "t", "--threads", "core");
	BAD("--budget", "'0'", "-s", "/a", "-t", "t", "--budget", "0");
	BAD("--budget", "'65537'", "-s", "/a", "-t", "t", "-b", "65537");
	BAD("--budget", "'many'", "-s", "/a", "-t", "t", "-b", "many");
	BAD("--mtu", "'67'", "-s", "/a", "-t", "t", "--mtu", "67");
	BAD("--mtu", "'65536'", "-s", "/a", "-t", "t", "-m", "65536");
	BAD("--mtu", "'1500 '", "-s", "/a", "-t", "t", "-m", "1500 ");
	BAD("--reconnect-ms", "'5'", "-s", "/a", "-t", "t", "--reconnect-ms", "5");
	BAD("--hold", "'0'", "-s", "/a", "-t", "t", "--hold", "0");
	BAD("--log-level", NULL, "-s", "/a", "-t", "t", "-l", "loud");
	BAD("--tap", "'this-is-far-too-long'", "-s", "/a", "-t", "this-is-far-too-long");
	BAD("--socket", NULL, "-s",
	    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
	    "-t", "t");
	BAD("--name", NULL, "-s", "/a", "-t", "t", "--name", "");

	/* worker=: a plain name; the ports on it poll alike; whole ports only. */
	BAD("--worker", "'a,b'", "-s", "/a", "-t", "t", "--worker", "a,b");
	BAD("--worker", "'w 1'", "-s", "/a", "-t", "t", "--worker", "w 1");
	BAD("--worker", "''", "-s", "/a", "-t", "t", "--worker", "");
	BAD("--worker", "'sixteen-chars-xx'", "-s", "/a", "-t", "t", "--worker",
	    "sixteen-chars-xx");
	BAD("ports port0 and port1 share worker w0", "busy-poll 200 and 0", "-p",
	    "socket=/a,tap=ta,worker=w0,busy-poll=200", "-p", "socket=/b,tap=tb,worker=w0");
	BAD("port0: worker=w0", "threads=queue", "-p", "socket=/a,tap=ta,worker=w0,threads=queue");
}

/* A reload keeps a port only with every setting the same, its worker included. */
static void test_port_equal(void)
{
	struct vu_port_config a;

	GOOD("-p", "socket=/a,tap=ta,worker=w0");
	a = d.ports[0];
	GOOD("-p", "socket=/a,tap=ta,worker=w0");
	CHECK(cfg_port_equal(&a, &d.ports[0]));
	GOOD("-p", "socket=/a,tap=ta,worker=w1");
	CHECK(!cfg_port_equal(&a, &d.ports[0]));
	GOOD("-p", "socket=/a,tap=ta");
	CHECK(!cfg_port_equal(&a, &d.ports[0]));
}

static void test_args_exit(void)
{
	CHECK(parse("--help", NULL) == 1 && strstr(out, "Usage: virtap") && err[0] == 0);
	CHECK(parse("-h", NULL) == 1 && strstr(out, "--socket"));
	CHECK(parse("--version", NULL) == 1 && strncmp(out, "virtap ", 7) == 0);
	CHECK(parse("-V", NULL) == 1 && strncmp(out, "virtap ", 7) == 0);
	/* Help wins over what follows it; an error before it still counts. */
	CHECK(parse("-h", "--bogus", NULL) == 1);
	CHECK(parse("-q", "0", "-h", NULL) == -EINVAL);
}

static void test_args_many_ports(void)
{
	static char specs[CFG_MAX_PORTS + 1][64];
	const char *a[2 * (CFG_MAX_PORTS + 1)];
	char *argv[2 * (CFG_MAX_PORTS + 1) + 6], *buf = NULL;
	size_t len = 0;
	FILE *e;
	int r;

	for (unsigned i = 0; i <= CFG_MAX_PORTS; i++) {
		snprintf(specs[i], sizeof(specs[i]), "socket=/s%u,tap=t%u", i, i);
		a[2 * i] = "-p";
		a[2 * i + 1] = specs[i];
	}
	argv[0] = "virtap";
	for (unsigned n = CFG_MAX_PORTS; n <= CFG_MAX_PORTS + 1; n++) {
		for (unsigned i = 0; i < 2 * n; i++)
			argv[1 + i] = (char *)a[i];
		argv[1 + 2 * n] = NULL;
		e = open_memstream(&buf, &len);
		REQUIRE(e);
		r = cfg_parse_args(&d, 1 + 2 * (int)n, argv, e);
		fclose(e);
		if (n == CFG_MAX_PORTS)
			CHECK(r == 0 && d.nports == CFG_MAX_PORTS);
		else
			CHECK(r == -EINVAL && strstr(buf, "more than 64 ports"));
		free(buf);
		buf = NULL;
	}
	/* 64 from --port plus the single port. */
	argv[1 + 2 * CFG_MAX_PORTS] = "-s";
	argv[2 + 2 * CFG_MAX_PORTS] = "/single";
	argv[3 + 2 * CFG_MAX_PORTS] = "-t";
	argv[4 + 2 * CFG_MAX_PORTS] = "tsingle";
	argv[5 + 2 * CFG_MAX_PORTS] = NULL;
	e = open_memstream(&buf, &len);
	REQUIRE(e);
	r = cfg_parse_args(&d, 5 + 2 * CFG_MAX_PORTS, argv, e);
	fclose(e);
	CHECK(r == -EINVAL && strstr(buf, "more than 64 ports"));
	free(buf);
}

/* ---- config files ------------------------------------------------------------------------- */

static const char *put_file(const char *text)
{
	int fd;

	snprintf(path, sizeof(path), "/tmp/vt-cfg-XXXXXX");
	fd = mkstemp(path);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* cfg_load_file on text; error text in err. */
static int load(const char *text)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *e = open_memstream(&buf, &len);
	int r;

	REQUIRE(e);
	memset(&d, 0, sizeof(d));
	r = cfg_load_file(&d, put_file(text), e);
	fclose(e);
	snprintf(err, sizeof(err), "%s", buf);
	free(buf);
	unlink(path);
	return r;
}

/* Rejected, the message naming the file and line and b. */
static bool bad_line(const char *text, unsigned line, const char *b)
{
	char where[96];
	int r = load(text);

	snprintf(where, sizeof(where), "%s:%u:", path, line);
	return r == -EINVAL && err_has(where, b);
}

static const char good_file[] = "# two ports\n"
				"; another comment\n"
				"log-level = warn\n"
				"\n"
				"[port web]\n"
				"socket = /run/web.sock\n"
				"tap = vtweb\n"
				"queues = 4\n"
				"threads = queue\n"
				"client = yes\n"
				"reconnect-ms = 250\n"
				"\t\n"
				"  [port db]  \r\n"
				"  socket=/run/db.sock   \r\n"
				"tap=vtdb\n"
				"mtu = 9000\n"
				"budget = 128\n"
				"hold = 64\n"
				"worker = shared0\n"
				"pad-short = on";

static void test_file_good(void)
{
	struct vu_port_config *w = &d.ports[0], *b = &d.ports[1];

	CHECK(load(good_file) == 0 && err[0] == 0);
	CHECK(d.nports == 2 && d.log_level == VT_LOG_WARN);
	CHECK(!strcmp(w->name, "web") && !strcmp(w->socket, "/run/web.sock"));
	CHECK(!strcmp(w->tap, "vtweb") && w->queues == 4 && w->threads == VU_THREADS_QUEUE);
	CHECK(w->client && w->reconnect_ms == 250 && w->mtu == 0);
	CHECK(!strcmp(b->name, "db") && !strcmp(b->socket, "/run/db.sock"));
	CHECK(!strcmp(b->tap, "vtdb") && b->mtu == 9000 && b->net.rx_budget_pkts == 128);
	CHECK(b->net.hold_frames == 64 && b->net.pad_short && !b->client && b->queues == 1);
	CHECK(!strcmp(b->worker_name, "shared0") && !w->worker_name[0]);

	/* Through -f, together with a port from the command line. */
	put_file(good_file);
	CHECK(parse("-f", path, "-s", "/c", "-t", "tc", NULL) == 0 && err[0] == 0);
	CHECK(d.nports == 3 && !strcmp(d.config_file, path) && !strcmp(d.ports[2].name, "port2"));
	/* ...and the command line's port clashes with the file's. */
	CHECK(parse("--config", path, "-s", "/run/db.sock", "-t", "tc", NULL) == -EINVAL &&
	      err_has("db", "port2"));
	unlink(path);

	/* A section without a name takes the next default one. */
	CHECK(load("[port]\nsocket=/a\ntap=t\n") == 0 && !strcmp(d.ports[0].name, "port0"));
	/* An empty file is no error for the loader (the argument check wants a port). */
	CHECK(load("") == 0 && d.nports == 0);
}

static void test_file_bad(void)
{
	static char long_line[3000];
	int r;

	CHECK(bad_line("socket = /a\n", 1, "outside"));
	CHECK(bad_line("# c\n[port a]\nsocket /a\n", 3, "key = value"));
	CHECK(bad_line("[port a]\nsocket=/a\n\n[bogus]\n", 4, "[port NAME]"));
	CHECK(bad_line("[port a\n", 1, "[port NAME]"));
	CHECK(bad_line("[port a]\ntap=t\ncolour = blue\n", 3, "'colour'"));
	CHECK(bad_line("[port a]\n\n\n\nqueues = 0\n", 5, "'0'"));
	CHECK(bad_line("[port a]\nthreads = many\n", 2, "'many'"));
	CHECK(bad_line("[port a]\nmtu = 9\n", 2, "'9'"));
	CHECK(bad_line("[port a]\ntap =\n", 2, "'tap'"));
	CHECK(bad_line("log-level = loud\n", 1, "log level"));
	CHECK(bad_line("[port aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n", 1, "too long"));

	/* Lines longer than the reader's buffer: a long comment is still one comment... */
	snprintf(long_line, sizeof(long_line), "[port a]\n# %02000d\nsocket = /a\ntap = t\n", 0);
	CHECK(load(long_line) == 0 && err[0] == 0 && d.nports == 1 &&
	      !strcmp(d.ports[0].socket, "/a"));
	/* ...and a long setting is one bad line, never read as two settings. */
	snprintf(long_line, sizeof(long_line), "[port a]\nsocket = /a%1100s\ntap = t\n",
		 "tap=evil");
	CHECK(bad_line(long_line, 2, NULL));
	CHECK(strcmp(d.ports[0].tap, "evil") != 0);

	/* A file that cannot be read. */
	memset(&d, 0, sizeof(d));
	{
		char *buf = NULL;
		size_t len = 0;
		FILE *e = open_memstream(&buf, &len);

		REQUIRE(e);
		r = cfg_load_file(&d, "/nonexistent/virtap.conf", e);
		fclose(e);
		CHECK(r == -ENOENT && strstr(buf, "/nonexistent/virtap.conf"));
		free(buf);
	}
	/* Through -f: the parser fails with the file's message. */
	put_file("[port a]\nsocket=/a\nqueues = 40\n");
	CHECK(parse("-f", path, NULL) == -EINVAL && err_has(":3:", "'40'"));
	unlink(path);
	CHECK(parse("-f", "/nonexistent/virtap.conf", NULL) == -EINVAL &&
	      err_has("/nonexistent/virtap.conf", NULL));
	/* A port in a file without a tap: the check after parsing names it. */
	put_file("[port lonely]\nsocket=/a\n");
	CHECK(parse("-f", path, NULL) == -EINVAL && err_has("lonely", "tap"));
	unlink(path);
}

int main(void)
{
	test_args_good();
	test_args_bad();
	test_port_equal();
	test_args_exit();
	test_args_many_ports();
	test_file_good();
	test_file_bad();
	/* After all the failures above, a plain parse still works (no state left behind). */
	CHECK(parse("-s", "/a", "-t", "t", NULL) == 0 && d.nports == 1 && err[0] == 0);
	return th_done("config");
}
