//! The contract: the user's trait, rewritten so that the daemon can spawn its calls.

use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemTrait, ReturnType, TraitItem, TraitItemFn};

use crate::model::Service;

/// The trait with each `async fn` rewritten to `fn … -> impl Future<Output = T> + Send`, and
/// `Send + Sync + 'static` added to its supertraits.
pub(super) fn contract(service: &Service<'_>) -> ItemTrait {
    let mut item = service.original.clone();
    strip_rmi_attrs(&mut item);
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Send));
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            rewrite_method(f);
        }
    }
    item
}

/// `async fn f(…) -> T` becomes `fn f(…) -> impl Future<Output = T> + Send`; a default body
/// becomes an `async move` block.
fn rewrite_method(f: &mut TraitItemFn) {
    f.sig.asyncness = None;
    let output = match &f.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    // Spanned at the method, so "future is not Send" notes point at the user's trait.
    let span = f.sig.ident.span();
    f.sig.output = syn::parse2(
        quote_spanned!(span=> -> impl ::core::future::Future<Output = #output> + ::core::marker::Send),
    )
    .expect("a return type");
    if let Some(block) = &f.default {
        let block_span = block.span();
        f.default =
            Some(syn::parse2(quote_spanned!(block_span=> { async move #block })).expect("a block"));
    }
}

/// Removes `#[rmi(...)]` from the trait's methods; they are ours, not the compiler's. (So is a
/// `#[cfg_attr]` hiding one, refused with its own error.)
pub(super) fn strip_rmi_attrs(item: &mut ItemTrait) {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| {
                !a.path().is_ident("rmi") && crate::attr::hidden_in_cfg_attr(a).is_none()
            });
            // (Refused on a parameter by the model, in the macro's words; not rustc's too.)
            for input in &mut f.sig.inputs {
                if let syn::FnArg::Typed(pt) = input {
                    pt.attrs.retain(|a| !a.path().is_ident("rmi"));
                }
            }
        }
    }
}
