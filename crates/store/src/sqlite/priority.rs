//! How the store's threads stand with the kernel's scheduler, beside the runtime's workers (and,
//! on a shared machine, everything else): the writer first, the checkpoints last.

/// The writer thread's nice value, where the process may raise a thread's priority.
const WRITER_NICE: libc::c_int = -10;
/// The checkpoint thread's nice value where it cannot run as `SCHED_IDLE`.
const BACKGROUND_NICE: libc::c_int = 10;

/// Raise the calling thread (the writer) to nice `WRITER_NICE`, where allowed (`CAP_SYS_NICE`,
/// or an `RLIMIT_NICE` of 30 or more); else it stays where it is, with a note in the log.
///
/// Every send goes through this one thread, and each of its commit groups answers all the sends
/// waiting. At a fair share it fell behind once the CPUs were busy: two tokio workers, the load
/// generator's threads and the writer on two cores, the writer needing half a core at 40,000
/// msgs/s and getting less, so its queue grew until the commit groups were large enough.
/// Median recv p99 of alternating runs (docs/benchmarks-history.md): 198 ms at nice 0 against
/// 109 at -10 at 40,000 msgs/s (ten runs each), 656 against 140 ms at 50,000 (seven);
/// 1.77–2.10 against 1.42–1.48 ms at 5,000, within the noise at 30,000. A higher weight cannot starve the
/// workers: the writer has work only while they hand it sends.
#[cfg(target_os = "linux")]
pub(crate) fn writer() {
    match set_nice(WRITER_NICE) {
        Ok(()) => tracing::debug!(nice = WRITER_NICE, "the writer thread's priority raised"),
        Err(e) => tracing::info!(
            error = %e,
            "the writer thread runs at the process's priority: raising it needs CAP_SYS_NICE \
             or an RLIMIT_NICE of at least {} (docs/configuration.md)",
            20 - WRITER_NICE
        ),
    }
}

/// Put the calling thread (the checkpoints) in the `SCHED_IDLE` class: it runs when a CPU has
/// nothing else to do (CFS gives it a weight of 3 against 1,024 for a thread at nice 0, so it is
/// slowed, never stopped). A checkpoint pass is bulk work whose lateness costs nothing until the
/// log nears the writer's limit, and past twice that the writer checkpoints without it; run
/// beside the threads that serve sends, it was a visible part of their tail at low rates (recv
/// p99 at 2,000 msgs/s 0.96 and 0.93 ms at nice 10, 0.62 and 0.54 as `SCHED_IDLE`:
/// docs/benchmarks-history.md). Lowering one's own class needs no privilege; should it fail
/// anyway, nice `BACKGROUND_NICE`.
#[cfg(target_os = "linux")]
pub(crate) fn background() {
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the call only reads `idle`.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } == 0 {
        return;
    }
    tracing::debug!(error = %std::io::Error::last_os_error(), "the checkpoint thread as SCHED_IDLE");
    if let Err(e) = set_nice(BACKGROUND_NICE) {
        tracing::debug!(error = %e, "lowering the checkpoint thread's priority");
    }
}

/// The calling thread's kernel id, for `hurry`.
#[cfg(target_os = "linux")]
pub(crate) fn thread_id() -> libc::pid_t {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() }
}

/// Lift thread `tid` (the checkpoint thread, while the writer waits for its pass) out of
/// `background` into the normal class at nice 0, where the process may (as for `writer`).
/// Returns whether it did. A starved pass holds SQLite's checkpoint lock, so the writer's own
/// checkpoint finds it busy and the log grows for as long as the pass lasts: on a saturated
/// machine, tens of MB.
#[cfg(target_os = "linux")]
pub(crate) fn hurry(tid: libc::pid_t) -> bool {
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: the call only reads its arguments; a `tid` that is gone is an error, no more.
    let normal_class = unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &normal) } == 0;
    normal_class && set_nice_of(tid, 0).is_ok()
}

/// Set the calling thread's nice value.
#[cfg(target_os = "linux")]
fn set_nice(nice: libc::c_int) -> std::io::Result<()> {
    set_nice_of(thread_id(), nice)
}

/// Set thread `tid`'s nice value (Linux: `PRIO_PROCESS` with a thread id applies to that thread
/// alone).
#[cfg(target_os = "linux")]
fn set_nice_of(tid: libc::pid_t, nice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `setpriority` only reads its arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn writer() {}

#[cfg(not(target_os = "linux"))]
pub(crate) fn background() {}

#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_id() -> i32 {
    0
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn hurry(_tid: i32) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn own_nice() -> libc::c_int {
        // SAFETY: as in `set_nice`. (-1 is also a valid nice value, so errno is not checked: the
        // tests below never set it.)
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn the_writer_thread_is_raised_where_the_process_may_raise_it() {
        std::thread::spawn(|| {
            let before = own_nice();
            // Whether this process may: lower the thread first, then try to come back.
            let allowed = set_nice(before + 1).is_ok() && set_nice(before).is_ok();
            writer();
            if allowed && before > WRITER_NICE {
                assert_eq!(own_nice(), WRITER_NICE);
            } else if !allowed {
                assert_eq!(
                    own_nice(),
                    before + 1,
                    "a refused raise leaves the thread as it was"
                );
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_hurried_checkpoint_thread_runs_in_the_normal_class_where_the_process_may() {
        let (tid, done) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let thread = std::thread::spawn(move || {
            background();
            tid.0.send(thread_id()).unwrap();
            done.1.recv().unwrap();
            // SAFETY: pid 0 is the calling thread.
            (unsafe { libc::sched_getscheduler(0) }, own_nice())
        });
        let id = tid.1.recv().unwrap();
        let hurried = hurry(id);
        done.0.send(()).unwrap();
        let (policy, nice) = thread.join().unwrap();
        // Whether this process may raise a thread: as root (CI, the bench machine) it may.
        // SAFETY: `geteuid` has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(hurried);
        }
        if hurried {
            assert_eq!((policy, nice), (libc::SCHED_OTHER, 0));
        } else {
            assert!(policy == libc::SCHED_IDLE || nice >= BACKGROUND_NICE);
        }
    }

    #[test]
    fn the_checkpoint_thread_runs_only_when_a_cpu_is_idle() {
        std::thread::spawn(|| {
            background();
            // SAFETY: pid 0 is the calling thread.
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert!(policy == libc::SCHED_IDLE || own_nice() >= BACKGROUND_NICE);
        })
        .join()
        .unwrap();
    }
}
