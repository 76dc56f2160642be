//! `{Trait}Batch`: calls queued by `{Trait}Proxy::batch`, sent in one round trip.

use proc_macro2::TokenStream;
use quote::quote;

use super::{args_tuple, params, Names};
use crate::model::{Access, Method, MethodKind, Service};

/// The `{Trait}Batch` type.
pub(super) fn batch_struct(
    service: &Service<'_>,
    names: &Names<'_>,
    p: &TokenStream,
) -> TokenStream {
    let vis = service.vis;
    let batch = &names.batch;
    let contract = names.contract;
    let doc = format!(
        "Calls to a remote [`{contract}`] queued to go in one round trip; from `{contract}Proxy::batch`."
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #batch {
            batch: #p::Batch,
        }
    }
}

/// One queuing method per remote method (streams cannot be batched), then `send` and
/// `send_oneway`.
pub(super) fn batch_impl(service: &Service<'_>, names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let batch = &names.batch;
    let methods = service
        .methods
        .iter()
        // (A property is not batched: Pyro's batches call methods only.)
        .filter(|m| !matches!(m.kind, MethodKind::Stream(_)) && matches!(m.access, Access::Call))
        .map(|m| batch_method(m, p));
    quote! {
        // (Names as in Python: see `proxy_impl`.)
        #[allow(non_snake_case)]
        impl #batch {
            #(#methods)*

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
    }
}

/// Queues a call of the method; its result is read from the returned `Slot` after `send`.
fn batch_method(m: &Method<'_>, p: &TokenStream) -> TokenStream {
    let attrs = &m.carried_attrs;
    let wire = &m.wire_name;
    let ident = m.ident;
    let output = if matches!(m.kind, MethodKind::Oneway(_)) {
        quote!(())
    } else {
        let o = &m.reply;
        quote!(#o)
    };
    let params = params(m);
    let args = args_tuple(m, p);
    quote! {
        #(#attrs)*
        pub fn #ident(&mut self, #(#params),*) -> #p::Slot<#output> {
            self.batch.add(#wire, #args)
        }
    }
}
