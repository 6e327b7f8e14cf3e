/*
 * kerasop pause: the pod sandbox ("infra") process for the local cluster.
 *
 * It holds the pod's namespaces open, sleeps until SIGTERM or SIGINT, and, being PID 1 of the
 * pod when the pod shares its PID namespace, reaps any zombie it inherits.
 * Built statically (gcc -static) so its image holds this one file and nothing else.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;

static void on_stop(int sig) { stop_signal = sig; }

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        puts("kerasop-pause 1.0");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "kerasop-pause: warning: not running as PID 1\n");
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        perror("sigaction");
        return 1;
    }
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) {
        perror("sigaction(SIGCHLD)");
        return 2;
    }

    while (!stop_signal) {
        pause();
    }
    fprintf(stderr, "kerasop-pause: shutting down on signal %d\n", (int)stop_signal);
    return 0;
}
