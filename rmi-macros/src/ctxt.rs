//! The error collector: every broken rule is reported in one compile, in source order.

/// Where an error belongs.
///
/// Lowering and validation are separate passes, but their errors are reported sorted by origin,
/// so that each trait item's errors come out together and in source order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Origin {
    /// The trait's header: its generics, `where` clause and `unsafe`.
    Header,
    /// The trait item at this index.
    Item(usize),
    /// A rule across methods (duplicate wire names), reported after everything else.
    Service,
}

/// Collects errors from lowering and validation (serde's `internals/ctxt.rs`).
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Vec<(Origin, syn::Error)>,
}

impl Ctxt {
    /// Records `error` against `origin`.
    pub(crate) fn error(&mut self, origin: Origin, error: syn::Error) {
        self.errors.push((origin, error));
    }

    /// Whether anything at `origin` has broken a rule so far.
    pub(crate) fn has_errors(&self, origin: Origin) -> bool {
        self.errors.iter().any(|(o, _)| *o == origin)
    }

    /// Every error, combined into one in source order; `Ok` when there are none.
    pub(crate) fn check(mut self) -> syn::Result<()> {
        // A stable sort: the errors of one origin stay in the order they were found.
        self.errors.sort_by_key(|(origin, _)| *origin);
        match combine(self.errors.into_iter().map(|(_, error)| error)) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Combines `errors` into one that reports each of them, in order; `None` when there are none.
pub(crate) fn combine(errors: impl IntoIterator<Item = syn::Error>) -> Option<syn::Error> {
    errors.into_iter().reduce(|mut all, error| {
        all.combine(error);
        all
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    fn messages(result: syn::Result<()>) -> Vec<String> {
        result
            .err()
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn errors_come_out_by_origin_then_in_the_order_found() {
        let mut cx = Ctxt::default();
        for (origin, msg) in [
            (Origin::Service, "duplicate"),
            (Origin::Item(1), "second item, lowering"),
            (Origin::Item(0), "first item, lowering"),
            (Origin::Header, "header"),
            (Origin::Item(0), "first item, validation"),
        ] {
            cx.error(origin, syn::Error::new(Span::call_site(), msg));
        }
        assert!(cx.has_errors(Origin::Item(0)));
        assert!(!cx.has_errors(Origin::Item(2)));
        assert_eq!(
            messages(cx.check()),
            [
                "header",
                "first item, lowering",
                "first item, validation",
                "second item, lowering",
                "duplicate",
            ]
        );
    }

    #[test]
    fn no_errors_is_ok() {
        assert!(Ctxt::default().check().is_ok());
        assert!(combine([]).is_none());
    }
}
