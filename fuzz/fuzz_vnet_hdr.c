// SPDX-License-Identifier: MIT
/* Fuzz the virtio-net header check: any header, any frame length, any negotiated features. */
#include <stdint.h>
#include <string.h>

#include "virtap/vnet.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct vnet_hdr h;
	uint64_t features;
	uint32_t frame_len;
	const char *why = NULL;

	if (n < sizeof(h) + 12)
		return 0;
	memcpy(&h, d, sizeof(h));
	memcpy(&features, d + sizeof(h), 8);
	memcpy(&frame_len, d + sizeof(h) + 8, 4);
	if (vnet_hdr_check(&h, frame_len % 70000, features, &why) != 0 && !why)
		__builtin_trap(); /* a refusal always says why */
	return 0;
}
