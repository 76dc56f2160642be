//! Compile-time tests of `#[rmi::remote]`: valid traits build without warnings, and each rule
//! the macro enforces fails the build with its own error (see `tests/ui/fail/*.stderr`).

#[test]
fn ui() {
    // trybuild builds the cases (and rmi with all its dependencies again) in a target directory
    // of its own, with none of the workspace's profile settings: with full debug info, that was
    // 2.3 GB of a CI run's disk. Its cargo inherits our environment; the cases need no
    // debugger.
    if std::env::var_os("CARGO_PROFILE_DEV_DEBUG").is_none() {
        std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "false");
    }
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
