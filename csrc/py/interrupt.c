/* interrupt.c — Ctrl-C during long core calls (generation, checkpoint IO).
 *
 * While the GIL is released Python's own SIGINT handler only sets a flag that nobody looks at
 * until the call returns, so a long generation could not be stopped. For the duration of such a
 * call we route SIGINT to gz_request_interrupt(), which the core polls, and restore the previous
 * handler afterwards. Only the main thread does this: two threads swapping process-wide handlers
 * could restore them in the wrong order and leave ours installed for good.
 */
#include "pycore.h"

#include <string.h>

static void on_sigint(int sig) {
    (void)sig;
    gz_request_interrupt(); /* an atomic store: async-signal-safe */
}

static int on_main_thread(void) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (!threading) {
        PyErr_Clear();
        return 0;
    }
    PyObject *main = PyObject_CallMethod(threading, "main_thread", NULL);
    PyObject *current = main ? PyObject_CallMethod(threading, "current_thread", NULL) : NULL;
    int same = main && current && main == current;
    Py_XDECREF(main);
    Py_XDECREF(current);
    Py_DECREF(threading);
    PyErr_Clear();
    return same;
}

void gzpy_sigint_begin(gzpy_sigint_guard *g) {
    memset(g, 0, sizeof *g);
    gz_clear_interrupt(); /* a stale request must not stop this call */
    if (!on_main_thread()) return;
    if (sigaction(SIGINT, NULL, &g->old_action) != 0) return;
    if (!(g->old_action.sa_flags & SA_SIGINFO) && g->old_action.sa_handler == SIG_IGN) return; /* nohup etc. */
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_sigint;
    sigemptyset(&act.sa_mask);
    if (sigaction(SIGINT, &act, NULL) == 0) g->installed = 1;
}

void gzpy_sigint_end(gzpy_sigint_guard *g, gz_status status) {
    if (g->installed) sigaction(SIGINT, &g->old_action, NULL);
    int pressed = gz_interrupt_requested();
    gz_clear_interrupt();
    /* The call completed although Ctrl-C was pressed: let Python's handler see the signal. */
    if (g->installed && pressed && status == GZ_OK) PyErr_SetInterrupt();
    g->installed = 0;
}
