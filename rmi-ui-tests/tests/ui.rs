//! Compile-time tests of `#[rmi::remote]`: valid traits build without warnings, and each rule
//! the macro enforces fails the build with its own error (see `tests/ui/fail/*.stderr`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
