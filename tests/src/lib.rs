//! Rudder's privileged integration and end-to-end tests live in `tests/`
//! beside this file; shared machinery is in the `rudder-test-harness` crate.
