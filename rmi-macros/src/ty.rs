//! What the macro needs to know about a type: whether it borrows, whether it is a stream or
//! `()`, and whether a receiver is `&self`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::Type;

/// `ty` without the invisible group a `macro_rules!` `$t:ty` fragment arrives in, and without
/// parentheses: `(Vec<u8>)` is `Vec<u8>`.
fn ungroup(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(g) => ty = &g.elem,
            Type::Paren(p) => ty = &p.elem,
            _ => return ty,
        }
    }
}

/// `T` when `ty` is `name<T>`, by its last path segment (so a path to it, such as
/// `std::vec::Vec<T>`, too); a qualified-self path is not matched.
fn single_type_arg<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
    let Type::Path(p) = ungroup(ty) else {
        return None;
    };
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

/// `T` of a declared `Result<T, E>`, or of a one-argument alias such as `io::Result<T>` (any
/// path ending in `Result` with one or two type arguments; whether its error converts into a
/// `RemoteError` is checked by the generated code, at this type).
pub(crate) fn result_ok(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ungroup(ty) else {
        return None;
    };
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
    let _error = types.next();
    types.next().is_none().then_some(ok)
}

/// `Vec<u8>` (by the last path segment, so `std::vec::Vec<u8>` too): sent and received as
/// bytes, one copy, rather than element by element. A type alias is not seen through.
pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    matches!(
        single_type_arg(ty, "Vec"),
        Some(t) if matches!(ungroup(t), Type::Path(t) if t.qself.is_none() && t.path.is_ident("u8"))
    )
}

/// `()`.
pub(crate) fn is_unit(ty: &Type) -> bool {
    matches!(ungroup(ty), Type::Tuple(t) if t.elems.is_empty())
}

/// `&self`, `&'_ self` or `self: &Self`; not `&'static self`, which no served object is.
pub(crate) fn is_shared_self(r: &syn::Receiver) -> bool {
    if r.mutability.is_some() {
        return false;
    }
    match &*r.ty {
        Type::Reference(t) => {
            t.mutability.is_none()
                && t.lifetime.as_ref().is_none_or(|l| l.ident == "_")
                && matches!(&*t.elem, Type::Path(p) if p.path.is_ident("Self"))
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
        // `!` (which would need a nightly feature in the generated code's types).
        Type::Never(n) => Some(n.to_token_stream()),
        // `Self` means another type in each generated item (the proxy, the server, a batch).
        Type::Path(p) if p.path.segments.iter().any(|seg| seg.ident == "Self") => {
            Some(p.to_token_stream())
        }
        Type::Path(p) => p
            .qself
            .as_ref()
            .and_then(|q| borrowed_or_impl(&q.ty))
            .or_else(|| {
                p.path.segments.iter().find_map(|seg| match &seg.arguments {
                    syn::PathArguments::AngleBracketed(ab) => {
                        ab.args.iter().find_map(|a| match a {
                            syn::GenericArgument::Type(t) => borrowed_or_impl(t),
                            // (`Cow<'_, str>` and `Cow<'static, str>` are owned as far as
                            // the arguments go: `Cow<str>` is.)
                            syn::GenericArgument::Lifetime(l)
                                if l.ident != "_" && l.ident != "static" =>
                            {
                                Some(l.to_token_stream())
                            }
                            _ => None,
                        })
                    }
                    syn::PathArguments::Parenthesized(args) => args
                        .inputs
                        .iter()
                        .find_map(borrowed_or_impl)
                        .or_else(|| output_culprit(&args.output)),
                    syn::PathArguments::None => None,
                })
            }),
        // A function pointer's parameters and result.
        Type::BareFn(f) => f
            .inputs
            .iter()
            .find_map(|arg| borrowed_or_impl(&arg.ty))
            .or_else(|| output_culprit(&f.output)),
        _ => None,
    }
}

/// [`borrowed_or_impl`] of a function type's result, if it has one.
fn output_culprit(output: &syn::ReturnType) -> Option<TokenStream> {
    match output {
        syn::ReturnType::Type(_, ty) => borrowed_or_impl(ty),
        syn::ReturnType::Default => None,
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
    fn the_ok_type_of_a_result_or_of_a_one_argument_alias_is_found() {
        let ok = |ty: Type| result_ok(&ty).map(|t| t.to_token_stream().to_string());
        assert_eq!(ok(syn::parse_quote!(Result<u8, E>)).as_deref(), Some("u8"));
        assert_eq!(ok(syn::parse_quote!(io::Result<u8>)).as_deref(), Some("u8"));
        assert_eq!(
            ok(syn::parse_quote!((Result<u8, E>))).as_deref(),
            Some("u8")
        );
        assert_eq!(ok(syn::parse_quote!(Result<u8, E, X>)), None);
        assert_eq!(ok(syn::parse_quote!(Result)), None);
        assert_eq!(ok(syn::parse_quote!(Option<u8>)), None);
    }

    #[test]
    fn a_type_in_an_invisible_group_is_seen_through() {
        // What a `macro_rules!` `$t:ty` fragment becomes.
        let group = |ty: Type| {
            Type::Group(syn::TypeGroup {
                group_token: Default::default(),
                elem: Box::new(ty),
            })
        };
        assert!(is_unit(&group(syn::parse_quote!(()))));
        assert!(is_byte_vec(&group(syn::parse_quote!(Vec<u8>))));
        assert!(stream_item(&group(syn::parse_quote!(RemoteStream<u8>))).is_some());
        assert!(result_ok(&group(syn::parse_quote!(Result<u8, E>))).is_some());
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
        // `'_` and `'static` are owned enough (`Cow<str>` is accepted); a named lifetime is not.
        assert_eq!(culprit(syn::parse_quote!(Cow<'static, str>)), None);
        assert_eq!(culprit(syn::parse_quote!(Cow<'_, str>)), None);
        assert_eq!(
            culprit(syn::parse_quote!(Cow<'a, str>)).as_deref(),
            Some("'a")
        );
        assert_eq!(
            culprit(syn::parse_quote!([impl Copy; 2])).as_deref(),
            Some("impl Copy")
        );
        assert_eq!(culprit(syn::parse_quote!(Option<(String, [u8; 4])>)), None);
        assert_eq!(culprit(syn::parse_quote!(!)).as_deref(), Some("!"));
        assert_eq!(
            culprit(syn::parse_quote!(Vec<Self>)).as_deref(),
            Some("Self")
        );
        assert_eq!(
            culprit(syn::parse_quote!(Self::Item)).as_deref(),
            Some("Self :: Item")
        );
        assert_eq!(
            culprit(syn::parse_quote!(<Self as Base>::X)).as_deref(),
            Some("Self")
        );
        assert_eq!(
            culprit(syn::parse_quote!(Option<fn(Self) -> u8>)).as_deref(),
            Some("Self")
        );
        assert_eq!(
            culprit(syn::parse_quote!(Box<dyn Fn(u8) -> Self>)),
            None,
            "(a trait object's bounds are not types: serde refuses it anyway)"
        );
    }
}
