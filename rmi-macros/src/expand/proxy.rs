//! `{Trait}Proxy`: the typed async client, one `async fn` per method over an untyped `Proxy`.

use proc_macro2::TokenStream;
use quote::quote;

use super::{args_tuple, args_tuple_items, params, Names};
use crate::model::{Access, Method, MethodKind, Service};
use crate::ty::is_byte_vec;

/// The `{Trait}Proxy` type.
pub(super) fn proxy_struct(
    service: &Service<'_>,
    names: &Names<'_>,
    p: &TokenStream,
) -> TokenStream {
    let vis = service.vis;
    let proxy = &names.proxy;
    let contract = names.contract;
    let doc = format!(
        "Typed client of a remote [`{contract}`]. Cheap to clone: clones share one connection, and calls from many tasks run concurrently over it."
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #proxy {
            proxy: #p::Proxy,
        }
    }
}

/// The constructors and settings of `{Trait}Proxy`, then one method per remote method.
pub(super) fn proxy_impl(service: &Service<'_>, names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let proxy = &names.proxy;
    let batch = &names.batch;
    let methods = service.methods.iter().map(|m| proxy_method(m, p));
    quote! {
        // (A method or parameter may be named as in Python, `setVolume(newLevel)`, under the
        // trait's own `#[allow(non_snake_case)]`, which does not reach these items.)
        #[allow(non_snake_case)]
        impl #proxy {
            /// Connects to the object at `uri` (`PYRO:`, or `PYRONAME:`/`PYROMETA:` through the
            /// name server) and performs the handshake now.
            pub async fn connect(uri: impl #p::IntoUri) -> #p::std::result::Result<Self, #p::Error> {
                #p::proxy_builder(uri)?.connect().await
            }

            /// Settings for a proxy to `uri`; finish with `.connect().await` or `.build()`.
            pub fn builder(uri: impl #p::IntoUri) -> #p::std::result::Result<#p::ProxyBuilder, #p::Error> {
                #p::proxy_builder(uri)
            }

            /// A proxy to `uri` that dials on its first call (no I/O now).
            pub fn from_uri(uri: impl #p::IntoUri) -> #p::std::result::Result<Self, #p::Error> {
                ::core::result::Result::Ok(Self { proxy: #p::proxy_builder(uri)?.build() })
            }

            /// Wraps an untyped proxy.
            pub fn from_proxy(proxy: #p::Proxy) -> Self {
                Self { proxy }
            }

            /// Queues calls to send in one round trip.
            pub fn batch(&self) -> #batch {
                #batch { batch: self.proxy.batch() }
            }

            /// The same connection, with a deadline for each call.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self { proxy: self.proxy.with_timeout(timeout) }
            }

            /// The same connection, with other per-call settings (timeout, annotations,
            /// correlation id, retries).
            pub fn with_options(&self, options: #p::CallOptions) -> Self {
                Self { proxy: self.proxy.with_options(options) }
            }

            /// The same connection, sending annotation `id` with every call.
            pub fn with_annotation(&self, id: [u8; 4], value: impl ::core::convert::Into<#p::Bytes>) -> Self {
                Self { proxy: self.proxy.with_annotation(id, value) }
            }

            /// The same connection, sending `id` as the correlation id of every call.
            pub fn with_correlation_id(&self, id: #p::Uuid) -> Self {
                Self { proxy: self.proxy.with_correlation_id(id) }
            }

            /// The same connection, retrying each call up to `n` times after a communication
            /// failure (for methods safe to run twice).
            pub fn with_retries(&self, n: u32) -> Self {
                Self { proxy: self.proxy.with_retries(n) }
            }

            /// The untyped proxy underneath.
            pub fn proxy(&self) -> &#p::Proxy {
                &self.proxy
            }

            /// Unwraps the untyped proxy.
            pub fn into_proxy(self) -> #p::Proxy {
                self.proxy
            }

            #(#methods)*
        }
    }
}

/// The proxy's `async fn` for the method: call, send oneway, or open a stream.
fn proxy_method(m: &Method<'_>, p: &TokenStream) -> TokenStream {
    let attrs = &m.carried_attrs;
    let wire = &m.wire_name;
    let ident = m.ident;
    let output = &m.reply;
    let params = params(m);
    let args = args_tuple(m, p);
    let proxy = if m.idempotent {
        quote!(self.proxy.idempotent())
    } else {
        quote!(self.proxy)
    };
    // A property is read and set as Pyro does: `__getattr__(name)`, `__setattr__(name, value)`.
    let (wire, args) = match m.access {
        Access::Call => (quote!(#wire), args),
        Access::Get(_) => (quote!("__getattr__"), quote!(&(#wire,))),
        Access::Set(_) => {
            // The value is never trimmed away as a trailing `None`: Pyro's daemons read
            // `__setattr__`'s two arguments whatever they are.
            let value = args_tuple_items(m, p);
            (
                quote!("__setattr__"),
                quote!(&(#wire, #(#p::Untrimmed(#value),)*)),
            )
        }
    };
    match &m.kind {
        // A `Vec<u8>` result is read as bytes, in one copy.
        MethodKind::Normal if is_byte_vec(output) => quote! {
            #(#attrs)*
            pub async fn #ident(&self, #(#params),*) -> #p::std::result::Result<#output, #p::Error> {
                #proxy.call::<_, #p::serde_bytes::ByteBuf>(#wire, #args).await.map(#p::serde_bytes::ByteBuf::into_vec)
            }
        },
        MethodKind::Normal => quote! {
            #(#attrs)*
            pub async fn #ident(&self, #(#params),*) -> #p::std::result::Result<#output, #p::Error> {
                #proxy.call(#wire, #args).await
            }
        },
        MethodKind::Oneway(_) => quote! {
            #(#attrs)*
            ///
            /// Oneway: returns once the request is written; no result comes back.
            pub async fn #ident(&self, #(#params),*) -> #p::std::result::Result<(), #p::Error> {
                #proxy.call_oneway(#wire, #args).await
            }
        },
        MethodKind::Stream(item) => quote! {
            #(#attrs)*
            ///
            /// Streamed: items are fetched from the daemon as the stream is polled.
            pub async fn #ident(&self, #(#params),*) -> #p::std::result::Result<#p::ItemStream<#item>, #p::Error> {
                #proxy.call_stream(#wire, #args).await
            }
        },
    }
}

/// `From<Proxy>` for `{Trait}Proxy`.
pub(super) fn from_proxy_impl(names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let proxy = &names.proxy;
    quote! {
        impl ::core::convert::From<#p::Proxy> for #proxy {
            fn from(proxy: #p::Proxy) -> Self {
                Self { proxy }
            }
        }
    }
}

/// `Serialize` for `{Trait}Proxy`: it travels as the object's URI.
pub(super) fn serialize_impl(names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let proxy = &names.proxy;
    quote! {
        /// Travels as the object's URI, so methods can take and return proxies.
        impl #p::serde::Serialize for #proxy {
            fn serialize<__S: #p::serde::Serializer>(&self, __s: __S) -> #p::std::result::Result<__S::Ok, __S::Error> {
                #p::serde::Serialize::serialize(&self.proxy, __s)
            }
        }
    }
}

/// `Deserialize` for `{Trait}Proxy`: a received proxy dials on its first call.
pub(super) fn deserialize_impl(names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let proxy = &names.proxy;
    quote! {
        /// A received proxy dials on its first call, with default settings, but the TLS
        /// settings and shared secret of the side that received it (see `rmi::Proxy`).
        impl<'__de> #p::serde::Deserialize<'__de> for #proxy {
            fn deserialize<__D: #p::serde::Deserializer<'__de>>(__d: __D) -> #p::std::result::Result<Self, __D::Error> {
                ::core::result::Result::Ok(Self { proxy: #p::received_proxy(__d)? })
            }
        }
    }
}
