//! Compile-time tests of `#[rmi::remote]`, run by `cargo test -p rmi-ui-tests` (trybuild):
//! the traits the macro accepts build without warnings, and each rule it enforces fails the
//! build with its own error (`tests/ui/fail/*.stderr`). The package holds nothing else: its
//! few dependencies are all trybuild compiles for each case.
