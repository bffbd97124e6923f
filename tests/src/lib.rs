//! Integration tests live in it/ (one test binary) and own_process/ (tests that need a process of their own); the macros' UI tests are the `ui-tests` package in ui/.
