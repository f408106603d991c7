// Reproducer for the demo tree's PR_GET_TIMERSLACK_HINT bug: one prctl call,
// which crashes the kernel on about a third of runs.
// Build: gcc -static -O2 -o repro repro_timerslack_hint.c
#include <stdio.h>
#include <sys/prctl.h>

#define PR_GET_TIMERSLACK_HINT 66

int main(void)
{
	unsigned long long hint = 0;
	int rc = prctl(PR_GET_TIMERSLACK_HINT, (unsigned long)&hint, 0UL, 0UL, 0UL);

	printf("prctl(PR_GET_TIMERSLACK_HINT) = %d, hint %llu ns\n", rc, hint);
	return 0;
}
