//! Locking that outlives a panic. A backend that panics fails its batch and its instance is
//! rebuilt (pipeline/instance.rs); the locks it may have held guard state that every update leaves
//! whole (a push, a drain, an insert, a take), so a poisoned lock still holds consistent data
//! and the rest of the pipeline goes on using it instead of panicking in turn.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cv.wait(guard)`, through a poisoned lock as `lock`.
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// `cv.wait_timeout(guard, d)`, through a poisoned lock as `lock`; whether it timed out is not
/// needed by its callers, which look at the clock.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    d: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, d)
        .unwrap_or_else(|p| p.into_inner())
        .0
}
