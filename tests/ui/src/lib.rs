//! Holds no code: the trybuild cases are in `pass/` and `fail/`, run by `ui.rs`.
