//! `{Trait}BlockingProxy`: the typed client for synchronous programs, over `{Trait}Proxy`.

use proc_macro2::TokenStream;
use quote::quote;

use super::{arg_names, params, Names};
use crate::model::{Method, MethodKind, Service};

/// The `{Trait}BlockingProxy` type.
pub(super) fn blocking_struct(service: &Service<'_>, names: &Names<'_>) -> TokenStream {
    let vis = service.vis;
    let blocking = &names.blocking;
    let proxy = &names.proxy;
    let contract = names.contract;
    let doc = format!(
        "Blocking client of a remote [`{contract}`], for synchronous programs: each method blocks until its result arrives. Do not use it from async code (tokio panics rather than block a thread that drives tasks); `spawn_blocking` threads are fine."
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #blocking {
            inner: #proxy,
        }
    }
}

/// The constructors of `{Trait}BlockingProxy`, then one blocking method per remote method.
pub(super) fn blocking_impl(
    service: &Service<'_>,
    names: &Names<'_>,
    p: &TokenStream,
) -> TokenStream {
    let blocking = &names.blocking;
    let proxy = &names.proxy;
    let methods = service.methods.iter().map(|m| blocking_method(m, proxy, p));
    quote! {
        // A deprecated method's blocking twin calls the deprecated async one. (Names as in
        // Python: see `proxy_impl`.)
        #[allow(deprecated, non_snake_case)]
        impl #blocking {
            /// Connects to the object at `uri`, blocking until the handshake is done.
            pub fn connect(uri: impl #p::IntoUri) -> #p::std::result::Result<Self, #p::Error> {
                #p::blocking::try_block_on(#proxy::connect(uri)).map(|inner| Self { inner })
            }

            /// Connects with the given settings, blocking until the handshake is done.
            pub fn connect_with(builder: #p::ProxyBuilder) -> #p::std::result::Result<Self, #p::Error> {
                #p::blocking::try_block_on(builder.connect::<#proxy>()).map(|inner| Self { inner })
            }

            /// The async proxy underneath (same connection).
            pub fn as_async(&self) -> &#proxy {
                &self.inner
            }

            #(#methods)*
        }
    }
}

/// The method, blocking on the async proxy's; a stream becomes a blocking iterator. The async
/// method is named by its type: `self.inner.into()` would find `Into::into` first (method
/// lookup tries methods taking `self` by value before `&self`), and so would any by-value
/// trait method in scope.
fn blocking_method(m: &Method<'_>, proxy: &syn::Ident, p: &TokenStream) -> TokenStream {
    let attrs = &m.carried_attrs;
    let ident = m.ident;
    let params = params(m);
    let names = arg_names(m);
    match &m.kind {
        MethodKind::Normal => {
            let output = &m.reply;
            quote! {
                #(#attrs)*
                pub fn #ident(&self, #(#params),*) -> #p::std::result::Result<#output, #p::Error> {
                    #p::blocking::try_block_on(#proxy::#ident(&self.inner, #(#names),*))
                }
            }
        }
        MethodKind::Oneway(_) => quote! {
            #(#attrs)*
            pub fn #ident(&self, #(#params),*) -> #p::std::result::Result<(), #p::Error> {
                #p::blocking::try_block_on(#proxy::#ident(&self.inner, #(#names),*))
            }
        },
        MethodKind::Stream(item) => quote! {
            #(#attrs)*
            pub fn #ident(&self, #(#params),*) -> #p::std::result::Result<#p::blocking::Iter<#item>, #p::Error> {
                #p::blocking::try_block_on(#proxy::#ident(&self.inner, #(#names),*)).map(#p::blocking::Iter::new)
            }
        },
    }
}
