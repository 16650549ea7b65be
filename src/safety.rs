//! Fail-safe plumbing: whatever goes wrong, the lock ends up locked.
//!
//! Lock drivers register an "emergency lock" closure here when they are built. The panic
//! hook installed by the daemon runs every registered closure, logs the panic, and aborts
//! the process (systemd restarts it, and a fresh start locks again). Normal shutdown goes
//! through the access controller, which locks explicitly; [`emergency_lock_all`] is the
//! last line of defence, not the usual path.

use std::sync::{Arc, Mutex};

type Locker = Arc<dyn Fn() + Send + Sync>;

static LOCKERS: Mutex<Vec<(u64, Locker)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Removes its closure from the registry when dropped.
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut v) = LOCKERS.lock() {
            v.retain(|(id, _)| *id != self.0);
        }
    }
}

/// Register a closure that forces the lock into its safe state. It must not block
/// for long and must not panic.
pub fn register_emergency_lock(f: impl Fn() + Send + Sync + 'static) -> Registration {
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut v = match LOCKERS.lock() {
        Ok(v) => v,
        Err(p) => p.into_inner(),
    };
    v.push((id, Arc::new(f)));
    Registration(id)
}

/// Run every registered emergency lock. Returns how many ran.
pub fn emergency_lock_all() -> usize {
    // Clone the list out so a closure can never deadlock on the registry.
    let lockers: Vec<Locker> = match LOCKERS.try_lock() {
        Ok(v) => v.iter().map(|(_, f)| f.clone()).collect(),
        Err(std::sync::TryLockError::Poisoned(p)) => {
            p.into_inner().iter().map(|(_, f)| f.clone()).collect()
        }
        Err(std::sync::TryLockError::WouldBlock) => return 0,
    };
    for f in &lockers {
        f();
    }
    lockers.len()
}

/// Install the daemon's panic hook: lock, report, abort. A panic on any thread
/// (vision, store, runtime) takes the whole daemon down with the lock locked rather
/// than leaving a half-working process in charge of a door.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let n = emergency_lock_all();
        log::error!("panic: {info}; {n} lock(s) forced to the locked state; aborting");
        previous(info);
        std::process::abort();
    }));
}

/// The handlers that were there before [`crash_signals_kill`] (Rust's own, which tells a
/// stack overflow apart from other faults). Written once before the handlers are
/// installed, read only by them.
static PREVIOUS: [std::sync::OnceLock<libc::sigaction>; 2] =
    [std::sync::OnceLock::new(), std::sync::OnceLock::new()];

/// Index of `sig` in [`PREVIOUS`].
fn crash_slot(sig: libc::c_int) -> usize {
    usize::from(sig != libc::SIGSEGV)
}

extern "C" fn on_crash_signal(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // si_code <= 0: sent by a process (kill, tkill, sigqueue), not a fault. Rust's
    // handler would take it for a fault it cannot place, restore the default and
    // return, swallowing the first one: die of it now instead.
    if code <= 0 {
        // SAFETY: async-signal-safe calls with valid arguments.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    match PREVIOUS[crash_slot(sig)].get() {
        Some(prev) if prev.sa_flags & libc::SA_SIGINFO != 0 && prev.sa_sigaction > 1 => {
            // SAFETY: the previous handler was installed with SA_SIGINFO; same arguments.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(prev.sa_sigaction) };
            f(sig, info, ctx);
        }
        // No handler of its own before: the default action (the fault recurs on return).
        // SAFETY: async-signal-safe.
        _ => unsafe {
            libc::signal(sig, libc::SIG_DFL);
        },
    }
}

/// SIGSEGV and SIGBUS sent with `kill` end the process at once (and systemd restarts it);
/// real faults still go to Rust's handler (its stack-overflow message), then kill it.
pub fn crash_signals_kill() -> std::io::Result<()> {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: sigaction with a zeroed struct, a valid handler and out-pointer.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let _ = PREVIOUS[crash_slot(sig)].set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_crash_signal as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(sig, &new, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn registered_lockers_run_and_unregister_on_drop() {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let reg = register_emergency_lock(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        emergency_lock_all();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        drop(reg);
        emergency_lock_all();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
