// kvmlab-refresh: run in a guest restored from a snapshot, before anything else.
// Sets the wall clock and reseeds the kernel's RNG from host randomness, so a
// restored clone neither lives in the past nor replays its template's random
// stream.
//   kvmlab-refresh EPOCH_NS HEX_SEED
// The seed is written to /dev/urandom (mixed in), added with RNDADDENTROPY
// (mixed in and credited) and the CRNG is reseeded at once (RNDRESEEDCRNG:
// without it the kernel takes the new input only at its next scheduled reseed,
// up to a minute later). Prints "refreshed" and exits 0, or says what failed.
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEED 256

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int main(int argc, char **argv)
{
	struct {
		int entropy_count;
		int buf_size;
		unsigned char buf[MAX_SEED];
	} ent;
	struct timespec ts;
	long long ns;
	size_t len, i;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: %s EPOCH_NS HEX_SEED\n", argv[0]);
		return 2;
	}
	ns = strtoll(argv[1], NULL, 10);
	len = strlen(argv[2]) / 2;
	if (ns <= 0 || len == 0 || len > MAX_SEED || strlen(argv[2]) % 2) {
		fprintf(stderr, "kvmlab-refresh: bad arguments\n");
		return 2;
	}
	for (i = 0; i < len; i++) {
		int hi = hexval(argv[2][2 * i]), lo = hexval(argv[2][2 * i + 1]);
		if (hi < 0 || lo < 0) {
			fprintf(stderr, "kvmlab-refresh: the seed is not hex\n");
			return 2;
		}
		ent.buf[i] = (unsigned char)(hi << 4 | lo);
	}
	ts.tv_sec = ns / 1000000000LL;
	ts.tv_nsec = ns % 1000000000LL;
	if (clock_settime(CLOCK_REALTIME, &ts)) {
		fprintf(stderr, "kvmlab-refresh: clock_settime: %s\n", strerror(errno));
		return 1;
	}
	fd = open("/dev/urandom", O_WRONLY);
	if (fd < 0) {
		fprintf(stderr, "kvmlab-refresh: /dev/urandom: %s\n", strerror(errno));
		return 1;
	}
	if (write(fd, ent.buf, len) != (ssize_t)len) {
		fprintf(stderr, "kvmlab-refresh: write /dev/urandom: %s\n", strerror(errno));
		return 1;
	}
	ent.entropy_count = (int)(8 * len);
	ent.buf_size = (int)len;
	if (ioctl(fd, RNDADDENTROPY, &ent)) {
		fprintf(stderr, "kvmlab-refresh: RNDADDENTROPY: %s\n", strerror(errno));
		return 1;
	}
	if (ioctl(fd, RNDRESEEDCRNG)) {
		fprintf(stderr, "kvmlab-refresh: RNDRESEEDCRNG: %s\n", strerror(errno));
		return 1;
	}
	close(fd);
	puts("refreshed");
	return 0;
}
