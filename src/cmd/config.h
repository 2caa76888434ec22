/* SPDX-License-Identifier: MIT */
/*
 * The daemon's configuration: ports from command-line flags, `--port key=value,...` and config
 * files. A person's mistake gets one clear message naming the flag, key or line.
 */
#ifndef VT_CMD_CONFIG_H
#define VT_CMD_CONFIG_H

#include <stdio.h>

#include "virtap/vu.h"

#define CFG_MAX_PORTS 64

struct daemon_config {
	struct vu_port_config ports[CFG_MAX_PORTS];
	unsigned nports;
	int log_level;
	char config_file[256];
};

/* Parse argv. Returns 0, 1 if the program should exit 0 (help, version), or -EINVAL after
 * printing the reason to err. */
int cfg_parse_args(struct daemon_config *d, int argc, char **argv, FILE *err);
/* Apply one `key=value` to a port; err gets the reason on failure. */
int cfg_port_set(struct vu_port_config *p, const char *key, const char *val, const char *where,
		 FILE *err);
int cfg_load_file(struct daemon_config *d, const char *path, FILE *err);
void cfg_usage(FILE *out);
/* Same port, same settings: a reload leaves it alone. */
bool cfg_port_equal(const struct vu_port_config *a, const struct vu_port_config *b);

#endif
