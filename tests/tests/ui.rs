//! Compile-time behaviour of the attribute macros: what compiles (`ui/pass`) and the exact
//! diagnostics of each misuse (`ui/fail`, with committed `.stderr` files).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p tests --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
