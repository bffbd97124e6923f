//! Compile-time behaviour of the attribute macros: what compiles (`pass`) and the exact
//! diagnostics of each misuse (`fail`, with committed `.stderr` files).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p ui-tests`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("pass/*.rs");
    t.compile_fail("fail/*.rs");
}
