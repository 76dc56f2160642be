//! The `#[remote]` attribute of [rmi](https://docs.rs/rmi): turns a trait into a remote
//! contract, generating the server dispatcher `{Trait}Server<T>` and the typed async client
//! `{Trait}Proxy`.
//!
//! Use it through the facade, `#[rmi::remote]`; its documentation has the full description and
//! an example that runs over loopback.

mod expand;
mod model;

use proc_macro::TokenStream;

/// Makes a trait a remote contract; see the `rmi` crate's documentation of `remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut item = match syn::parse::<syn::ItemTrait>(item) {
        Ok(item) => item,
        Err(e) => {
            let mut err = syn::Error::new(e.span(), "#[remote] applies to a trait");
            err.combine(e);
            return err.to_compile_error().into();
        }
    };
    // Report option errors and trait errors together, in one compile.
    match (model::Options::parse(attr.into()), model::lower(&item)) {
        (Ok(options), Ok(service)) => expand::expand(&item, &service, &options).into(),
        (options, service) => {
            let errors = [options.err(), service.err()]
                .into_iter()
                .flatten()
                .reduce(|mut a, b| {
                    a.combine(b);
                    a
                });
            let errors = errors.expect("at least one error");
            // Keep the trait (minus our attributes) so the user's impls do not add unrelated errors.
            expand::strip_rmi_attrs(&mut item);
            let mut out = quote::quote!(#item);
            out.extend(errors.to_compile_error());
            out.into()
        }
    }
}
