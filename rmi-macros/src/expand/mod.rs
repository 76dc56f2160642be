//! Code generation from the model: the contract (the rewritten trait), `{Trait}Server<T>`,
//! `{Trait}Proxy`, `{Trait}Batch` and `{Trait}BlockingProxy`.
//!
//! Every generated name is computed here, once, and passed down; each submodule has one function
//! per generated item.

mod batch;
mod blocking;
mod contract;
mod proxy;
mod server;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use syn::ItemTrait;

use crate::model::{Method, Options, Service};
use crate::ty::is_byte_vec;

/// The names of the generated types: the trait's name plus a fixed suffix, on the trait's span.
pub(crate) struct Names<'a> {
    /// The trait itself.
    pub(crate) contract: &'a Ident,
    /// `{Trait}Server`: serves an implementation.
    pub(crate) server: Ident,
    /// `{Trait}Proxy`: the typed async client.
    pub(crate) proxy: Ident,
    /// `{Trait}Batch`: calls queued by `{Trait}Proxy::batch`.
    pub(crate) batch: Ident,
    /// `{Trait}BlockingProxy`: the typed blocking client.
    pub(crate) blocking: Ident,
}

impl<'a> Names<'a> {
    /// The names for the trait called `contract`.
    pub(crate) fn new(contract: &'a Ident) -> Self {
        let span = contract.span();
        Names {
            contract,
            server: format_ident!("{}Server", contract, span = span),
            proxy: format_ident!("{}Proxy", contract, span = span),
            batch: format_ident!("{}Batch", contract, span = span),
            blocking: format_ident!("{}BlockingProxy", contract, span = span),
        }
    }
}

/// Everything `#[remote]` puts in place of the trait.
pub(crate) fn expand(service: &Service<'_>, options: &Options) -> TokenStream {
    let krate = &options.krate;
    let p = &quote!(#krate::__private);
    let names = &Names::new(service.ident);

    let contract = contract::contract(service);
    let server_struct = server::server_struct(service, names, p);
    let server_impl = server::server_impl(names, p);
    let server_clone = server::clone_impl(names);
    let server_dispatch = server::dispatch_impl(service, names, p);
    let clashes = server::conditional_clashes(service);
    let type_checks = server::type_checks(service, p, options.server_only);
    let server = quote! {
        #clashes
        #type_checks
        #contract
        #server_struct
        #server_impl
        #server_clone
        #server_dispatch
    };
    if options.server_only {
        return server;
    }
    let proxy_struct = proxy::proxy_struct(service, names, p);
    let proxy_impl = proxy::proxy_impl(service, names, p);
    let batch_struct = batch::batch_struct(service, names, p);
    let batch_impl = batch::batch_impl(service, names, p);
    let blocking_struct = blocking::blocking_struct(service, names);
    let blocking_impl = blocking::blocking_impl(service, names, p);
    let proxy_from = proxy::from_proxy_impl(names, p);
    let proxy_serialize = proxy::serialize_impl(names, p);
    let proxy_deserialize = proxy::deserialize_impl(names, p);
    quote! {
        #server
        #proxy_struct
        #proxy_impl
        #batch_struct
        #batch_impl
        #blocking_struct
        #blocking_impl
        #proxy_from
        #proxy_serialize
        #proxy_deserialize
    }
}

/// What `#[remote]` emits when the trait breaks a rule: the trait as written (minus our
/// attributes), so that the user's impls add no unrelated errors, then every error.
pub(crate) fn fallback(item: &ItemTrait, errors: &syn::Error) -> TokenStream {
    let mut item = item.clone();
    contract::strip_rmi_attrs(&mut item);
    let mut out = quote!(#item);
    out.extend(errors.to_compile_error());
    out
}

/// `name: Type` for each argument, as the trait declares them.
fn params<'m>(m: &'m Method<'_>) -> impl Iterator<Item = TokenStream> + 'm {
    m.args.iter().map(|arg| {
        let (ident, ty) = (arg.ident, arg.ty);
        quote!(#ident: #ty)
    })
}

/// The argument names, in order.
fn arg_names<'m>(m: &'m Method<'_>) -> Vec<&'m Ident> {
    m.args.iter().map(|arg| arg.ident).collect()
}

/// The arguments as the runtime takes them: a reference to a tuple, or to an empty array when
/// there are none. A `Vec<u8>` goes as bytes (`ByteArg`, taking it by value): the same bincode
/// wire as a sequence of `u8`, bytes in the Pyro formats even when empty, and a large one sent
/// from its own buffer, not copied.
fn args_tuple(m: &Method<'_>, p: &TokenStream) -> TokenStream {
    if m.args.is_empty() {
        return quote!(&[(); 0]);
    }
    let items = args_tuple_items(m, p);
    quote!(&(#(#items,)*))
}

/// The items of [`args_tuple`]'s tuple.
fn args_tuple_items<'m>(
    m: &'m Method<'_>,
    p: &'m TokenStream,
) -> impl Iterator<Item = TokenStream> + 'm {
    m.args.iter().map(move |arg| {
        let ident = arg.ident;
        if is_byte_vec(arg.ty) {
            quote!(#p::ByteArg::from(#ident))
        } else if m.keep_none {
            // Sent as `None`, where a trailing one is otherwise left out (so that a Python
            // method's default applies). Every argument, not only those written `Option<..>`:
            // an alias of one, or a newtype around one, serializes a `None` just the same
            // (helper-166 #1: those were left out, under `keep_none`).
            quote!(#p::Untrimmed(#ident))
        } else {
            quote!(#ident)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_the_trait_name_plus_a_suffix() {
        let contract = format_ident!("Greeter");
        let names = Names::new(&contract);
        assert_eq!(names.contract, "Greeter");
        assert_eq!(names.server, "GreeterServer");
        assert_eq!(names.proxy, "GreeterProxy");
        assert_eq!(names.batch, "GreeterBatch");
        assert_eq!(names.blocking, "GreeterBlockingProxy");
    }
}
