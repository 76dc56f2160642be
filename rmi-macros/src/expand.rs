//! Code generation: the rewritten trait, `{Trait}Server<T>` and `{Trait}Proxy`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{ItemTrait, ReturnType, TraitItem};

use crate::model::{MethodKind, Options, Service};

/// Removes `#[rmi(...)]` from the trait's methods; they are ours, not the compiler's.
pub fn strip_rmi_attrs(item: &mut ItemTrait) {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("rmi"));
        }
    }
}

/// Rewrites each `async fn` to `fn … -> impl Future<Output = T> + Send` and adds
/// `Send + Sync + 'static` to the trait, so the daemon can spawn calls.
fn rewrite_trait(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    strip_rmi_attrs(&mut item);
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Send));
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        f.sig.asyncness = None;
        let output = match &f.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, ty) => quote!(#ty),
        };
        // Spanned at the method, so "future is not Send" notes point at the user's trait.
        let span = f.sig.ident.span();
        f.sig.output =
            syn::parse2(quote_spanned!(span=> -> impl ::core::future::Future<Output = #output> + ::core::marker::Send))
                .expect("a return type");
        if let Some(block) = &f.default {
            let block_span = {
                use syn::spanned::Spanned;
                block.span()
            };
            f.default = Some(
                syn::parse2(quote_spanned!(block_span=> { async move #block })).expect("a block"),
            );
        }
    }
    item
}

pub fn expand(item: &ItemTrait, service: &Service, options: &Options) -> TokenStream {
    let krate = &options.krate;
    let p = quote!(#krate::__private);
    let trait_ident = &item.ident;
    let vis = &item.vis;
    let server_ident = format_ident!("{}Server", trait_ident, span = trait_ident.span());
    let batch_ident = format_ident!("{}Batch", trait_ident, span = trait_ident.span());
    let blocking_ident = format_ident!("{}BlockingProxy", trait_ident, span = trait_ident.span());
    let batch_doc = format!(
        "Calls to a remote [`{trait_ident}`] queued to go in one round trip; from `{trait_ident}Proxy::batch`."
    );
    let blocking_doc = format!(
        "Blocking client of a remote [`{trait_ident}`], for synchronous programs: each method blocks until its result arrives. Do not use it inside an async runtime."
    );
    let proxy_ident = format_ident!("{}Proxy", trait_ident, span = trait_ident.span());
    let rewritten = rewrite_trait(item);
    let server_doc = format!("Serves a [`{trait_ident}`] implementation: register it in a daemon.");
    let proxy_doc = format!(
        "Typed client of a remote [`{trait_ident}`]. Cheap to clone: clones share one connection, and calls from many tasks run concurrently over it."
    );

    let metadata_pushes = service.methods.iter().map(|m| {
        let cfgs: Vec<_> = m
            .carried_attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
            .collect();
        let wire = &m.wire_name;
        let oneway = matches!(m.kind, MethodKind::Oneway).then(|| {
            quote! { #(#cfgs)* __oneway.push(#p::std::string::String::from(#wire)); }
        });
        quote! {
            #(#cfgs)* __methods.push(#p::std::string::String::from(#wire));
            #oneway
        }
    });

    let arms = service.methods.iter().map(|m| {
        let cfgs = m.carried_attrs.iter().filter(|a| a.path().is_ident("cfg"));
        let wire = &m.wire_name;
        let ident = &m.ident;
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = m.args.iter().map(|(_, t)| t).collect();
        let encode = match &m.kind {
            MethodKind::Stream(_) => quote! { #p::encode_stream(&__args, __result) },
            _ => quote! { #p::encode_result(&__args, &__result) },
        };
        let decode = if names.is_empty() {
            quote! { __args.decode::<[(); 0]>().map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?; }
        } else {
            quote! {
                let (#(#names,)*): (#(#types,)*) =
                    __args.decode().map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?;
            }
        };
        quote! {
            #(#cfgs)*
            #wire => {
                #decode
                let __result = <__T as #trait_ident>::#ident(&*self.inner, #(#names),*).await;
                #encode
            }
        }
    });

    let proxy_methods = service.methods.iter().map(|m| {
        let attrs = &m.carried_attrs;
        let wire = &m.wire_name;
        let ident = &m.ident;
        let output = &m.output;
        let params = m.args.iter().map(|(n, t)| quote!(#n: #t));
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let args = if names.is_empty() { quote!(&[(); 0]) } else { quote!(&(#(#names,)*)) };
        let proxy = if m.idempotent { quote!(self.proxy.idempotent()) } else { quote!(self.proxy) };
        match &m.kind {
            MethodKind::Normal => quote! {
                #(#attrs)*
                pub async fn #ident(&self, #(#params),*) -> #p::std::result::Result<#output, #p::Error> {
                    #proxy.call(#wire, #args).await
                }
            },
            MethodKind::Oneway => quote! {
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
    });

    let batch_methods = service
        .methods
        .iter()
        .filter(|m| !matches!(m.kind, MethodKind::Stream(_)))
        .map(|m| {
            let attrs = &m.carried_attrs;
            let wire = &m.wire_name;
            let ident = &m.ident;
            let output = if matches!(m.kind, MethodKind::Oneway) {
                quote!(())
            } else {
                let o = &m.output;
                quote!(#o)
            };
            let params = m.args.iter().map(|(n, t)| quote!(#n: #t));
            let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
            let args = if names.is_empty() {
                quote!(&[(); 0])
            } else {
                quote!(&(#(#names,)*))
            };
            quote! {
                #(#attrs)*
                pub fn #ident(&mut self, #(#params),*) -> #p::Slot<#output> {
                    self.batch.add(#wire, #args)
                }
            }
        });

    let blocking_methods = service.methods.iter().map(|m| {
        let attrs = &m.carried_attrs;
        let ident = &m.ident;
        let params = m.args.iter().map(|(n, t)| quote!(#n: #t));
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        match &m.kind {
            MethodKind::Normal => {
                let output = &m.output;
                quote! {
                    #(#attrs)*
                    pub fn #ident(&self, #(#params),*) -> #p::std::result::Result<#output, #p::Error> {
                        #p::blocking::block_on(self.inner.#ident(#(#names),*))
                    }
                }
            }
            MethodKind::Oneway => quote! {
                #(#attrs)*
                pub fn #ident(&self, #(#params),*) -> #p::std::result::Result<(), #p::Error> {
                    #p::blocking::block_on(self.inner.#ident(#(#names),*))
                }
            },
            MethodKind::Stream(item) => quote! {
                #(#attrs)*
                pub fn #ident(&self, #(#params),*) -> #p::std::result::Result<#p::blocking::Iter<#item>, #p::Error> {
                    #p::blocking::block_on(self.inner.#ident(#(#names),*)).map(#p::blocking::Iter::new)
                }
            },
        }
    });

    quote! {
        #rewritten

        #[doc = #server_doc]
        #vis struct #server_ident<__T> {
            inner: #p::std::sync::Arc<__T>,
        }

        impl<__T: #trait_ident> #server_ident<__T> {
            /// Wraps `object` for registration in a daemon.
            pub fn new(object: __T) -> Self {
                Self { inner: #p::std::sync::Arc::new(object) }
            }

            /// Wraps an object that is shared with other code.
            pub fn from_arc(object: #p::std::sync::Arc<__T>) -> Self {
                Self { inner: object }
            }

            /// The served object.
            pub fn get_ref(&self) -> &__T {
                &self.inner
            }
        }

        impl<__T> ::core::clone::Clone for #server_ident<__T> {
            fn clone(&self) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }

        #[allow(clippy::let_unit_value, clippy::unit_arg, unused_variables, unused_mut)]
        impl<__T: #trait_ident> #p::Dispatch for #server_ident<__T> {
            fn metadata(&self) -> #p::Metadata {
                <Self as #p::Dispatch>::describe()
            }

            fn describe() -> #p::Metadata {
                let mut __methods = #p::std::vec::Vec::new();
                let mut __oneway = #p::std::vec::Vec::new();
                #(#metadata_pushes)*
                #p::Metadata { methods: __methods, oneway: __oneway, attrs: #p::std::vec::Vec::new() }
            }

            fn dispatch<'__a>(
                &'__a self,
                __method: &'__a str,
                __args: #p::Args,
            ) -> #p::BoxFuture<'__a, #p::std::result::Result<#p::Outcome, #p::RemoteError>> {
                #p::std::boxed::Box::pin(async move {
                    match __method {
                        #(#arms)*
                        _ => #p::std::result::Result::Err(#p::RemoteError::unknown_method("", __method)),
                    }
                })
            }
        }

        #[doc = #proxy_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #proxy_ident {
            proxy: #p::Proxy,
        }

        impl #proxy_ident {
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
            pub fn batch(&self) -> #batch_ident {
                #batch_ident { batch: self.proxy.batch() }
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

            #(#proxy_methods)*
        }

        #[doc = #batch_doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #batch_ident {
            batch: #p::Batch,
        }

        impl #batch_ident {
            #(#batch_methods)*

            /// Sends the queued calls in one round trip; results come back in order, and
            /// execution stops at the first error.
            pub async fn send(self) -> #p::std::result::Result<#p::BatchResults, #p::Error> {
                self.batch.send().await
            }

            /// Sends the queued calls without waiting for any result.
            pub async fn send_oneway(self) -> #p::std::result::Result<(), #p::Error> {
                self.batch.send_oneway().await
            }
        }

        #[doc = #blocking_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #blocking_ident {
            inner: #proxy_ident,
        }

        impl #blocking_ident {
            /// Connects to the object at `uri`, blocking until the handshake is done.
            pub fn connect(uri: impl #p::IntoUri) -> #p::std::result::Result<Self, #p::Error> {
                #p::blocking::block_on(#proxy_ident::connect(uri)).map(|inner| Self { inner })
            }

            /// Connects with the given settings, blocking until the handshake is done.
            pub fn connect_with(builder: #p::ProxyBuilder) -> #p::std::result::Result<Self, #p::Error> {
                #p::blocking::block_on(builder.connect::<#proxy_ident>()).map(|inner| Self { inner })
            }

            /// The async proxy underneath (same connection).
            pub fn as_async(&self) -> &#proxy_ident {
                &self.inner
            }

            #(#blocking_methods)*
        }

        impl ::core::convert::From<#p::Proxy> for #proxy_ident {
            fn from(proxy: #p::Proxy) -> Self {
                Self { proxy }
            }
        }

        /// Travels as the object's URI, so methods can take and return proxies.
        impl #p::serde::Serialize for #proxy_ident {
            fn serialize<__S: #p::serde::Serializer>(&self, __s: __S) -> #p::std::result::Result<__S::Ok, __S::Error> {
                #p::serde::Serialize::serialize(&self.proxy, __s)
            }
        }

        /// A received proxy dials on its first call, with default settings.
        impl<'__de> #p::serde::Deserialize<'__de> for #proxy_ident {
            fn deserialize<__D: #p::serde::Deserializer<'__de>>(__d: __D) -> #p::std::result::Result<Self, __D::Error> {
                ::core::result::Result::Ok(Self { proxy: <#p::Proxy as #p::serde::Deserialize>::deserialize(__d)? })
            }
        }
    }
}
