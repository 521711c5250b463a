/* check.h: the self-check protocol of the programs restore's tests run: a program sets
 * itself up, waits for SIGUSR1 (on_usr1 sets go) once it is restored, then checks its own
 * state; CHECK writes why a check failed into why and makes the check function return 0.
 * Include it after the system headers (stdio, signal); define WHY_SIZE first for reports
 * longer than 256 bytes. */
#ifndef WHY_SIZE
#define WHY_SIZE 256
#endif

static volatile sig_atomic_t go;
static char why[WHY_SIZE];

#define CHECK(cond, ...)                                      \
	do {                                                  \
		if (!(cond)) {                                \
			snprintf(why, sizeof(why), __VA_ARGS__); \
			return 0;                             \
		}                                             \
	} while (0)

static void on_usr1(int sig) { go = 1; }
