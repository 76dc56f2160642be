//! What the macro needs to know about a type: whether it borrows, whether it is a stream or
//! `()`, and whether a receiver is `&self`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::Type;

/// `T` when `ty` is `name<T>`, by its last path segment (so a path to it, such as
/// `std::vec::Vec<T>`, too); a qualified-self path is not matched.
fn single_type_arg<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != name || p.qself.is_some() {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(ab) if ab.args.len() == 1 => match ab.args.first()? {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// `T` when `ty` is `RemoteStream<T>` (by its last path segment, so `rmi::RemoteStream<T>` too).
pub(crate) fn stream_item(ty: &Type) -> Option<&Type> {
    single_type_arg(ty, "RemoteStream")
}

/// `T` of a declared `Result<T, E>` (any path ending in `Result` with two type arguments).
pub(crate) fn result_ok(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(ab) = &last.arguments else {
        return None;
    };
    let mut types = ab.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let ok = types.next()?;
    types.next()?;
    Some(ok)
}

/// `Vec<u8>` (by the last path segment, so `std::vec::Vec<u8>` too): sent and received as
/// bytes, one copy, rather than element by element. A type alias is not seen through.
pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    matches!(
        single_type_arg(ty, "Vec"),
        Some(Type::Path(t)) if t.qself.is_none() && t.path.is_ident("u8")
    )
}

/// `()`.
pub(crate) fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// `&self` or `self: &Self`.
pub(crate) fn is_shared_self(r: &syn::Receiver) -> bool {
    if r.mutability.is_some() {
        return false;
    }
    match &*r.ty {
        Type::Reference(t) => {
            t.mutability.is_none() && matches!(&*t.elem, Type::Path(p) if p.path.is_ident("Self"))
        }
        _ => false,
    }
}

/// The tokens of a reference, lifetime or `impl Trait` inside `ty`, if any (for a full caret).
pub(crate) fn borrowed_or_impl(ty: &Type) -> Option<TokenStream> {
    match ty {
        Type::Reference(r) => Some(r.to_token_stream()),
        Type::ImplTrait(i) => Some(i.to_token_stream()),
        Type::Paren(p) => borrowed_or_impl(&p.elem),
        Type::Group(g) => borrowed_or_impl(&g.elem),
        Type::Tuple(t) => t.elems.iter().find_map(borrowed_or_impl),
        Type::Array(a) => borrowed_or_impl(&a.elem),
        Type::Slice(s) => borrowed_or_impl(&s.elem),
        Type::Path(p) => p.path.segments.iter().find_map(|seg| match &seg.arguments {
            syn::PathArguments::AngleBracketed(ab) => ab.args.iter().find_map(|a| match a {
                syn::GenericArgument::Type(t) => borrowed_or_impl(t),
                syn::GenericArgument::Lifetime(l) => Some(l.to_token_stream()),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_item_is_found_by_the_last_path_segment() {
        let item = |ty: Type| stream_item(&ty).map(|t| t.to_token_stream().to_string());
        assert_eq!(
            item(syn::parse_quote!(RemoteStream<u64>)).as_deref(),
            Some("u64")
        );
        assert_eq!(
            item(syn::parse_quote!(rmi::RemoteStream<Vec<u8>>)).as_deref(),
            Some("Vec < u8 >")
        );
        assert_eq!(item(syn::parse_quote!(Vec<u64>)), None);
        assert_eq!(item(syn::parse_quote!(RemoteStream)), None);
    }

    #[test]
    fn byte_vectors_are_found_by_the_last_path_segment() {
        let bytes = |ty: Type| is_byte_vec(&ty);
        assert!(bytes(syn::parse_quote!(Vec<u8>)));
        assert!(bytes(syn::parse_quote!(std::vec::Vec<u8>)));
        assert!(!bytes(syn::parse_quote!(Vec<i8>)));
        assert!(!bytes(syn::parse_quote!(Vec<Vec<u8>>)));
        assert!(!bytes(syn::parse_quote!(Option<Vec<u8>>)));
        assert!(!bytes(syn::parse_quote!([u8; 4])));
    }

    #[test]
    fn borrowed_or_impl_finds_the_culprit_inside_a_type() {
        let culprit = |ty: Type| borrowed_or_impl(&ty).map(|t| t.to_string());
        assert_eq!(
            culprit(syn::parse_quote!((u8, Vec<&str>))).as_deref(),
            Some("& str")
        );
        assert_eq!(
            culprit(syn::parse_quote!(Cow<'static, str>)).as_deref(),
            Some("'static")
        );
        assert_eq!(
            culprit(syn::parse_quote!([impl Copy; 2])).as_deref(),
            Some("impl Copy")
        );
        assert_eq!(culprit(syn::parse_quote!(Option<(String, [u8; 4])>)), None);
    }
}
