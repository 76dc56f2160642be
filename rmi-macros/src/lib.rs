//! The `#[remote]` attribute of [rmi](https://docs.rs/rmi): turns a trait into a remote
//! contract, generating the server dispatcher `{Trait}Server<T>`, the typed async client
//! `{Trait}Proxy` with its batch type `{Trait}Batch`, and the blocking client
//! `{Trait}BlockingProxy`.
//!
//! Use it through the facade, `#[rmi::remote]`; its documentation has the full description and
//! an example that runs over loopback.
//!
//! # Layout
//!
//! - `model`: the attribute's options, and the trait lowered to plain structs, with the checks
//!   that need only the node at hand; `attr` reads a method's `#[rmi(...)]` for it;
//! - `validate`: the rules across a method's pieces and across methods;
//! - `ctxt`: collects the errors of both passes, to report them all in source order;
//! - `expand`: generates the items from the model, one function per item.

mod attr;
mod ctxt;
mod expand;
mod model;
mod ty;
mod validate;

use proc_macro::TokenStream;

use crate::ctxt::Ctxt;
use crate::model::{Options, Service};

/// Makes a trait a remote contract; see the `rmi` crate's documentation of `remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_remote(attr.into(), item.into()).into()
}

/// The macro on `proc_macro2` tokens (so that unit tests can run it): parse, lower, validate,
/// expand; on error, the trait as written plus every error.
fn expand_remote(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let item = match syn::parse2::<syn::ItemTrait>(item) {
        Ok(item) => item,
        Err(e) => {
            let mut err = syn::Error::new(e.span(), "#[remote] applies to a trait");
            err.combine(e);
            return err.to_compile_error();
        }
    };
    let options = Options::parse(attr);
    let mut cx = Ctxt::default();
    let service = Service::from_syn(&item, &mut cx);
    let server_only = options.as_ref().is_ok_and(|o| o.server_only);
    validate::validate(&service, server_only, &mut cx);
    // Report option errors and trait errors together, in one compile.
    match (options, cx.check()) {
        (Ok(options), Ok(())) => expand::expand(&service, &options),
        (options, checked) => {
            let errors = ctxt::combine([options.err(), checked.err()].into_iter().flatten());
            expand::fallback(&item, &errors.expect("at least one error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    /// The messages of the `compile_error!`s in `tokens`, in order.
    fn errors(tokens: proc_macro2::TokenStream) -> Vec<String> {
        let mut found = Vec::new();
        let mut trees = tokens.into_iter().peekable();
        while let Some(tree) = trees.next() {
            if let proc_macro2::TokenTree::Ident(ident) = &tree {
                if ident == "compile_error" {
                    let _bang = trees.next();
                    if let Some(proc_macro2::TokenTree::Group(args)) = trees.next() {
                        found.push(args.stream().to_string());
                    }
                }
            }
        }
        found
    }

    #[test]
    fn errors_of_lowering_and_validation_come_out_in_source_order() {
        let out = super::expand_remote(
            quote!(bogus),
            quote! {
                trait Mixed<T> {
                    #[rmi(oneway)]
                    fn connect(&self) -> u32;
                    type Output;
                    async fn pattern(&self, (a, b): (u8, u8));
                    #[rmi(name = "x")]
                    async fn first(&self);
                    #[rmi(name = "x")]
                    async fn second(&self);
                }
            },
        );
        assert_eq!(
            errors(out),
            [
                r##""unknown #[remote] option; the options are `crate = path` and `server_only`""##,
                r##""#[remote] traits cannot be generic""##,
                r##""remote methods must be `async fn`""##,
                r##""the method name `connect` is reserved: the generated proxy has its own `connect`; rename it and keep the wire name with #[rmi(name = \"connect\")]""##,
                r##""a oneway method cannot return a value: its caller gets no reply""##,
                r##""#[remote] traits may contain only methods (no associated types, consts or macros)""##,
                r##""remote method arguments must be plain identifiers, not patterns""##,
                r##""duplicate wire name \"x\": each method needs its own #[rmi(name = ...)]""##,
            ]
        );
    }

    #[test]
    fn a_raw_identifier_is_its_plain_name_on_the_wire_and_to_the_checks() {
        let out = super::expand_remote(
            quote!(),
            quote! {
                trait Raw {
                    async fn r#connect(&self);
                    async fn r#type(&self);
                    #[rmi(name = "type")]
                    async fn kind(&self);
                }
            },
        );
        assert_eq!(
            errors(out),
            [
                r##""the method name `connect` is reserved: the generated proxy has its own `connect`; rename it and keep the wire name with #[rmi(name = \"connect\")]""##,
                r##""duplicate wire name \"type\": each method needs its own #[rmi(name = ...)]""##,
            ]
        );
    }

    #[test]
    fn a_trait_that_breaks_a_rule_is_emitted_without_rmi_attributes() {
        let out = super::expand_remote(
            quote!(),
            quote!(
                trait T {
                    #[rmi(oneway)]
                    fn f(&self);
                }
            ),
        );
        let out = out.to_string();
        assert!(out.starts_with("trait T { fn f (& self) ; }"), "{out}");
        assert!(!out.contains("TServer"), "{out}");
    }

    #[test]
    fn only_a_trait_is_accepted() {
        let out = super::expand_remote(
            quote!(),
            quote!(
                struct S;
            ),
        );
        assert_eq!(errors(out)[0], r##""#[remote] applies to a trait""##);
    }
}
