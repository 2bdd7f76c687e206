//! Waiting, bounded, for something a cluster does in its own time: the one
//! polling helper of the test suites and `cargo xtask smoke`.

use std::{
    fmt,
    time::{Duration, Instant},
};

/// How often a condition is asked by [`poll`] and [`until`].
pub const EVERY: Duration = Duration::from_millis(500);

/// A wait that ran out.
#[derive(Debug)]
pub struct Timeout {
    pub what: String,
    pub after: Duration,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not within {} s", self.what, self.after.as_secs())
    }
}

impl std::error::Error for Timeout {}

/// Asks `f` every 500 ms until it gives a value, for at most `within`.
pub fn poll<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> Result<T, Timeout> {
    poll_every(what, within, EVERY, f)
}

/// Asks `f` every `every` until it gives a value, for at most `within`.
pub fn poll_every<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, Timeout> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(Timeout {
                what: what.to_owned(),
                after: within,
            });
        }
        std::thread::sleep(every);
    }
}

/// Asks `f` every 500 ms until it holds, for at most `within`.
pub fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Result<(), Timeout> {
    poll(what, within, || f().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_first_value_and_times_out_naming_what() {
        let mut n = 0;
        let v = poll("three", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v.unwrap(), 3);
        let e = until("never", Duration::ZERO, || false).unwrap_err();
        assert_eq!(e.to_string(), "never not within 0 s");
    }
}
