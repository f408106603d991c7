// Reproducer for the demo tree's PR_GET_COMM_DIGEST bug: one prctl call.
// Build: gcc -static -O2 -o repro repro_comm_digest.c
#include <stdio.h>
#include <sys/prctl.h>

#define PR_GET_COMM_DIGEST 65

int main(void)
{
	unsigned int digest = 0;
	int rc = prctl(PR_GET_COMM_DIGEST, (unsigned long)&digest, 0UL, 0UL, 0UL);

	printf("prctl(PR_GET_COMM_DIGEST) = %d, digest %#x\n", rc, digest);
	return 0;
}
