//! Reporting every problem of an attribute at once.
//!
//! A user who fixes one error should not meet the next one only on the following build, so the
//! checks do not stop at the first failure. Each independent check returns a `syn::Result`, and
//! [`join`] pairs the results, keeping every error in order; a check that finds several problems
//! in one place (the function's signature) gathers them in [`Errors`]. Both end with either the
//! values or the errors, so no code path needs a placeholder for "an error was already reported".

/// Several problems found by one check, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The value of `result`, or `None` with its error pushed: for checks whose values are
    /// only needed once every check has run.
    pub(crate) fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(error);
                None
            }
        }
    }

    /// `value` if nothing was pushed, otherwise every pushed error.
    pub(crate) fn finish_with<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            None => Ok(value),
            Some(error) => Err(error),
        }
    }
}

/// Both values, or the errors of both results, `a`'s first.
///
/// Nests for more values: `join(a, join(b, c))` gives `(a, (b, c))`.
pub(crate) fn join<A, B>(a: syn::Result<A>, b: syn::Result<B>) -> syn::Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(error), b) => Err(followed_by(error, b)),
        (Ok(_), Err(error)) => Err(error),
    }
}

/// `error`, followed by the error of `rest` if it failed too.
pub(crate) fn followed_by<T>(mut error: syn::Error, rest: syn::Result<T>) -> syn::Error {
    if let Err(rest) = rest {
        error.combine(rest);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    fn fail<T>(message: &str) -> syn::Result<T> {
        Err(syn::Error::new(Span::call_site(), message))
    }

    fn messages<T>(result: syn::Result<T>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn join_keeps_the_values_or_every_error_in_order() {
        assert_eq!(join(Ok(1), Ok("a")).ok(), Some((1, "a")));
        assert_eq!(messages(join(fail::<()>("a"), Ok(2))), ["a"]);
        assert_eq!(messages(join(Ok(1), fail::<()>("b"))), ["b"]);
        assert_eq!(messages(join(fail::<()>("a"), fail::<()>("b"))), ["a", "b"]);
        let nested = join(
            fail::<()>("a"),
            join(Ok(1), join(fail::<()>("c"), fail::<()>("d"))),
        );
        assert_eq!(messages(nested), ["a", "c", "d"]);
        assert_eq!(join(Ok(1), join(Ok(2), Ok(3))).ok(), Some((1, (2, 3))));
    }

    #[test]
    fn errors_finish_with_the_value_or_everything_pushed() {
        assert_eq!(Errors::default().finish_with(7).ok(), Some(7));
        let mut errors = Errors::default();
        errors.push(syn::Error::new(Span::call_site(), "first"));
        errors.push(syn::Error::new(Span::call_site(), "second"));
        assert_eq!(messages(errors.finish_with(7)), ["first", "second"]);
    }

    #[test]
    fn take_keeps_a_value_or_pushes_the_error() {
        let mut errors = Errors::default();
        assert_eq!(errors.take(Ok(1)), Some(1));
        assert_eq!(errors.take(fail::<u8>("a")), None);
        assert_eq!(errors.take(fail::<u8>("b")), None);
        assert_eq!(messages(errors.finish_with(())), ["a", "b"]);
    }

    #[test]
    fn followed_by_appends_only_a_failure() {
        let error = syn::Error::new(Span::call_site(), "a");
        assert_eq!(
            messages(Err::<(), _>(followed_by(error.clone(), Ok(1)))),
            ["a"]
        );
        assert_eq!(
            messages(Err::<(), _>(followed_by(error, fail::<()>("b")))),
            ["a", "b"]
        );
    }
}
