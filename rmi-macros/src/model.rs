//! The service model lowered from a trait, with every rule checked and all errors collected.

use proc_macro2::Span;
use syn::{
    Attribute, FnArg, Ident, ItemTrait, LitStr, Pat, ReturnType, TraitItem, TraitItemFn, Type,
};

/// Wire names the runtime uses itself (Pyro's batch and attribute access).
const RESERVED_WIRE_NAMES: &[&str] = &["<batch>", "__getattr__", "__setattr__"];
/// Rust names of the generated proxy's own methods.
/// Also `clone` and `from`, which an inherent proxy method would shadow.
const RESERVED_RUST_NAMES: &[&str] = &[
    "connect",
    "builder",
    "from_proxy",
    "from_uri",
    "proxy",
    "into_proxy",
    "with_timeout",
    "with_options",
    "with_annotation",
    "with_correlation_id",
    "with_retries",
    "batch",
    "clone",
    "from",
];

/// Options of the `#[remote(...)]` attribute itself.
pub struct Options {
    /// Path to the runtime (`::rmi` unless `crate = ...` is given).
    pub krate: syn::Path,
}

impl Options {
    pub fn parse(attr: proc_macro2::TokenStream) -> syn::Result<Options> {
        let mut krate: syn::Path = syn::parse_quote!(::rmi);
        if attr.is_empty() {
            return Ok(Options { krate });
        }
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                let value = meta.value()?;
                krate = if value.peek(LitStr) {
                    value.parse::<LitStr>()?.parse()?
                } else {
                    value.parse()?
                };
                Ok(())
            } else {
                Err(meta.error("unknown #[remote] option; the only option is `crate = path`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(Options { krate })
    }
}

/// A remote method.
pub struct Method {
    /// The Rust name.
    pub ident: Ident,
    /// The name on the wire.
    pub wire_name: String,
    /// Where the wire name comes from (the `name = "..."` literal, or the Rust name).
    pub wire_span: Span,
    /// `#[doc]` and `#[cfg]` attributes, copied to generated items.
    pub carried_attrs: Vec<Attribute>,
    /// Argument names and types, in order.
    pub args: Vec<(Ident, Type)>,
    /// The declared output (`()` when none).
    pub output: Type,
    /// How the method is called.
    pub kind: MethodKind,
    /// `#[rmi(idempotent)]`: safe to retry after a communication failure.
    pub idempotent: bool,
}

/// How a method is called.
pub enum MethodKind {
    /// Call and wait for the result.
    Normal,
    /// `#[rmi(oneway)]`: send and do not wait; no result.
    Oneway,
    /// Returns `RemoteStream<T>`: the caller gets a stream of `T`, fetched item by item.
    Stream(Box<Type>),
}

/// A remote trait.
pub struct Service {
    pub methods: Vec<Method>,
}

/// Lowers the trait to a [`Service`], or returns every rule it breaks.
pub fn lower(item: &ItemTrait) -> Result<Service, syn::Error> {
    let mut errors: Vec<syn::Error> = Vec::new();
    if !item.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &item.generics,
            "#[remote] traits cannot be generic",
        ));
    }
    if let Some(w) = &item.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            w,
            "#[remote] traits cannot have `where` clauses",
        ));
    }
    if let Some(u) = &item.unsafety {
        errors.push(syn::Error::new_spanned(
            u,
            "#[remote] traits cannot be `unsafe`",
        ));
    }
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(m) = lower_method(f, &mut errors) {
                    methods.push(m);
                }
            }
            other => {
                let msg = "#[remote] traits may contain only methods (no associated types, consts or macros)";
                errors.push(match other {
                    TraitItem::Type(t) => syn::Error::new_spanned(&t.ident, msg),
                    TraitItem::Const(c) => syn::Error::new_spanned(&c.ident, msg),
                    TraitItem::Macro(m) => syn::Error::new_spanned(&m.mac, msg),
                    other => syn::Error::new_spanned(other, msg),
                })
            }
        }
    }
    for (i, m) in methods.iter().enumerate() {
        if methods[..i]
            .iter()
            .any(|earlier| earlier.wire_name == m.wire_name)
        {
            errors.push(syn::Error::new(
                m.wire_span,
                format!(
                    "duplicate wire name {:?}: each method needs its own #[rmi(name = ...)]",
                    m.wire_name
                ),
            ));
        }
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(err) => Err(err),
        None => Ok(Service { methods }),
    }
}

fn lower_method(f: &TraitItemFn, errors: &mut Vec<syn::Error>) -> Option<Method> {
    let sig = &f.sig;
    let before = errors.len();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "remote methods must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "remote methods cannot be generic",
        ));
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            w,
            "remote methods cannot have `where` clauses",
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            u,
            "remote methods cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "remote methods cannot declare an ABI",
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            c,
            "remote methods cannot be `const`",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
            "remote methods cannot be variadic",
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if is_shared_self(r) => {}
        Some(FnArg::Receiver(r)) => {
            errors.push(syn::Error::new_spanned(
                r,
                "remote methods take `&self` (calls run concurrently)",
            ));
        }
        _ => errors.push(syn::Error::new(
            sig.ident.span(),
            "remote methods take `&self` as their first parameter",
        )),
    }
    let mut args = Vec::new();
    for input in sig.inputs.iter().skip(1) {
        let FnArg::Typed(pt) = input else { continue };
        let ident = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => pi.ident.clone(),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "remote method arguments must be plain identifiers, not patterns",
                ));
                continue;
            }
        };
        if ident.to_string().starts_with("__") {
            errors.push(syn::Error::new_spanned(
                &ident,
                "argument names starting with `__` are reserved for generated code",
            ));
            continue;
        }
        if let Some(tokens) = borrowed_or_impl(&pt.ty) {
            errors.push(syn::Error::new_spanned(
                tokens,
                "remote method arguments must be owned types that implement serde's traits (e.g. `String`, not `&str`; no `impl Trait`)",
            ));
            continue;
        }
        args.push((ident, (*pt.ty).clone()));
    }
    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Some(tokens) = borrowed_or_impl(ty) {
                errors.push(syn::Error::new_spanned(
                    tokens,
                    "remote methods must return an owned type",
                ));
            }
            (**ty).clone()
        }
    };
    let mut wire_name = sig.ident.to_string();
    let mut wire_span = sig.ident.span();
    let mut carried_attrs = Vec::new();
    let mut named = false;
    let mut oneway: Option<proc_macro2::Span> = None;
    let mut idempotent = false;
    for attr in &f.attrs {
        if attr.path().is_ident("rmi") {
            let res = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if std::mem::replace(&mut named, true) {
                        return Err(syn::Error::new(lit.span(), "the wire name is given more than once"));
                    }
                    if lit.value().is_empty() {
                        return Err(syn::Error::new(lit.span(), "the wire name cannot be empty"));
                    }
                    wire_name = lit.value();
                    wire_span = lit.span();
                    Ok(())
                } else if meta.path.is_ident("oneway") {
                    oneway = Some(meta.path.get_ident().map(|i| i.span()).unwrap_or_else(Span::call_site));
                    Ok(())
                } else if meta.path.is_ident("idempotent") {
                    idempotent = true;
                    Ok(())
                } else {
                    Err(meta.error("unknown #[rmi] option; expected `name = \"...\"`, `oneway` or `idempotent`"))
                }
            });
            if let Err(e) = res {
                errors.push(e);
            }
        } else if attr.path().is_ident("doc") || attr.path().is_ident("cfg") {
            carried_attrs.push(attr.clone());
        }
    }
    if RESERVED_WIRE_NAMES.contains(&wire_name.as_str()) || wire_name.starts_with('_') {
        errors.push(syn::Error::new(
            wire_span,
            format!("the wire name {wire_name:?} is reserved by the runtime (names starting with `_`, `<batch>`, `__getattr__`, `__setattr__`)"),
        ));
    }
    if RESERVED_RUST_NAMES.contains(&sig.ident.to_string().as_str()) {
        errors.push(syn::Error::new(
            sig.ident.span(),
            format!(
                "the method name `{}` is reserved: the generated proxy has its own `{}`; rename it and keep the wire name with #[rmi(name = \"{}\")]",
                sig.ident, sig.ident, sig.ident
            ),
        ));
    }
    let stream_item = stream_item(&output);
    let kind = match (oneway, stream_item) {
        (Some(span), _) if !is_unit(&output) => {
            errors.push(syn::Error::new(
                span,
                "a oneway method cannot return a value: its caller gets no reply",
            ));
            MethodKind::Oneway
        }
        (Some(_), _) => MethodKind::Oneway,
        (None, Some(item)) => MethodKind::Stream(Box::new(item)),
        (None, None) => MethodKind::Normal,
    };
    if errors.len() > before {
        return None;
    }
    Some(Method {
        ident: sig.ident.clone(),
        wire_name,
        wire_span,
        carried_attrs,
        args,
        output,
        kind,
        idempotent,
    })
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// `T` when `ty` is `RemoteStream<T>` (by its last path segment, so `rmi::RemoteStream<T>` too).
fn stream_item(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "RemoteStream" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(ab) if ab.args.len() == 1 => match ab.args.first()? {
            syn::GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `&self` or `self: &Self`.
fn is_shared_self(r: &syn::Receiver) -> bool {
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
fn borrowed_or_impl(ty: &Type) -> Option<proc_macro2::TokenStream> {
    use quote::ToTokens;
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
