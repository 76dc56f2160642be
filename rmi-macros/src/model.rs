//! The service model: plain structs lowered from the trait, with the checks that need only the
//! node at hand; produces no tokens.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, Generics, Ident, ItemTrait, LitStr, Pat, ReturnType, Signature, TraitItem,
    TraitItemFn, Type, Visibility,
};

use crate::attr::MethodAttrs;
use crate::ctxt::{Ctxt, Origin};
use crate::ty::{borrowed_or_impl, is_shared_self, result_ok, stream_item};

/// Options of the `#[remote(...)]` attribute itself.
pub(crate) struct Options {
    /// Path to the runtime (`::rmi` unless `crate = ...` is given).
    pub(crate) krate: syn::Path,
    /// `server_only`: generate the contract and `{Trait}Server<T>`, no client types.
    pub(crate) server_only: bool,
}

impl Options {
    /// Parses the attribute's arguments: nothing, or `crate = path` (a path or a string).
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Options> {
        let mut krate: syn::Path = syn::parse_quote!(::rmi);
        let mut server_only = false;
        if attr.is_empty() {
            return Ok(Options { krate, server_only });
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
            } else if meta.path.is_ident("server_only") {
                server_only = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[remote] option; the options are `crate = path` and `server_only`",
                ))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(Options { krate, server_only })
    }
}

/// A remote trait.
pub(crate) struct Service<'a> {
    /// The trait as written; the contract (the rewritten trait) is made from it.
    pub(crate) original: &'a ItemTrait,
    /// The trait's name: the stem of every generated name.
    pub(crate) ident: &'a Ident,
    /// The trait's visibility, given to every generated type.
    pub(crate) vis: &'a Visibility,
    /// The methods in order, including those that break a rule (then nothing is expanded).
    pub(crate) methods: Vec<Method<'a>>,
}

/// A remote method.
pub(crate) struct Method<'a> {
    /// Where the method's errors are reported, so that they stay in source order.
    pub(crate) origin: Origin,
    /// The Rust name.
    pub(crate) ident: &'a Ident,
    /// The name on the wire.
    pub(crate) wire_name: String,
    /// Where the wire name comes from (the `name = "..."` literal, or the Rust name).
    pub(crate) wire_span: Span,
    /// The wire name was given (`name = "..."`), not taken from the Rust name.
    pub(crate) named: bool,
    /// `#[doc]`, `#[cfg]`, `#[deprecated]` and lint attributes, copied to generated items.
    pub(crate) carried_attrs: Vec<Attribute>,
    /// The arguments after `&self`, in order (only the well-formed ones).
    pub(crate) args: Vec<Arg<'a>>,
    /// The declared output (`()` when none).
    pub(crate) output: Type,
    /// What the caller receives: the output, or `T` for a `#[rmi(raises)]` method returning
    /// `Result<T, E>`, which raises its error as a remote exception.
    pub(crate) reply: Type,
    /// `#[rmi(raises)]`: an `Err` is raised as the remote exception, not returned as a value.
    pub(crate) raises: bool,
    /// How the method is called.
    pub(crate) kind: MethodKind<'a>,
    /// `#[rmi(idempotent)]`: safe to retry after a communication failure.
    pub(crate) idempotent: bool,
    /// `#[rmi(keep_none)]`: `None` arguments are sent, not left out as trailing ones.
    pub(crate) keep_none: bool,
    /// A method, or one side of a property.
    pub(crate) access: Access,
}

/// What a method is to a Pyro caller: a method, or one side of a property (Python's exposed
/// `@property`, read and set by the pseudo-methods `__getattr__` and `__setattr__`, and listed
/// in the metadata's `attrs`, not its `methods`).
#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// A method, called by its wire name.
    Call,
    /// `#[rmi(property)]`, spanned at `property`: reads the property named by the wire name.
    Get(Span),
    /// `#[rmi(setter)]`, spanned at `setter`: sets the property named by the wire name.
    Set(Span),
}

impl Access {
    /// Whether it sets a property.
    pub(crate) fn is_set(self) -> bool {
        matches!(self, Access::Set(_))
    }

    /// Whether two methods with one wire name collide: only a property's getter and its
    /// setter share a name. (A name is a method or a property to a Python proxy, which asks
    /// its `attrs` first: a method named as a property is out of its reach.)
    pub(crate) fn clashes_with(self, other: Access) -> bool {
        !matches!(
            (self, other),
            (Access::Get(_), Access::Set(_)) | (Access::Set(_), Access::Get(_))
        )
    }
}

/// An argument of a remote method.
pub(crate) struct Arg<'a> {
    /// Its name: a plain identifier.
    pub(crate) ident: &'a Ident,
    /// Its declared type.
    pub(crate) ty: &'a Type,
}

/// How a method is called.
pub(crate) enum MethodKind<'a> {
    /// Call and wait for the result.
    Normal,
    /// `#[rmi(oneway)]`, spanned at `oneway`: send and do not wait; no result.
    Oneway(Span),
    /// Returns `RemoteStream<T>`: the caller gets a stream of `T`, fetched item by item.
    Stream(&'a Type),
}

impl<'a> Service<'a> {
    /// Lowers the trait, reporting to `cx` every rule that a single node breaks.
    pub(crate) fn from_syn(item: &'a ItemTrait, cx: &mut Ctxt) -> Self {
        check_header(item, cx);
        let mut methods = Vec::new();
        for (index, trait_item) in item.items.iter().enumerate() {
            let origin = Origin::Item(index);
            match trait_item {
                TraitItem::Fn(f) => methods.push(Method::from_syn(f, origin, cx)),
                other => cx.error(origin, not_a_method(other)),
            }
        }
        name_setters_after_getters(&mut methods);
        Service {
            original: item,
            ident: &item.ident,
            vis: &item.vis,
            methods,
        }
    }
}

/// A setter not named on its own sets its getter's property, under the getter's wire name:
/// `set_brightness_level` sets what `#[rmi(property, name = "brightnessLevel")] async fn
/// brightness_level` reads, not a property `brightness_level` of its own.
fn name_setters_after_getters(methods: &mut [Method<'_>]) {
    let getters: Vec<(String, String)> = methods
        .iter()
        .filter(|m| matches!(m.access, Access::Get(_)))
        .map(|m| (m.ident.unraw().to_string(), m.wire_name.clone()))
        .collect();
    for setter in methods.iter_mut().filter(|m| m.access.is_set() && !m.named) {
        let rust = setter.ident.unraw().to_string();
        let Some(property) = rust.strip_prefix("set_") else {
            continue;
        };
        if let Some((_, wire)) = getters.iter().find(|(getter, _)| getter == property) {
            setter.wire_name.clone_from(wire);
        }
    }
}

impl Method<'_> {
    /// The method's `#[cfg]` attributes: what is compiled out of the trait is out of the
    /// generated items too.
    pub(crate) fn cfg_attrs(&self) -> impl Iterator<Item = &Attribute> + '_ {
        self.carried_attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
    }
}

impl<'a> Method<'a> {
    /// Lowers one method, reporting at `origin` every rule that a single node of it breaks.
    fn from_syn(f: &'a TraitItemFn, origin: Origin, cx: &mut Ctxt) -> Self {
        let sig = &f.sig;
        check_signature(sig, origin, cx);
        check_receiver(sig, origin, cx);
        let args = lower_args(sig, origin, cx);
        let output = lower_output(sig, origin, cx);
        let attrs = MethodAttrs::from_syn(&f.attrs, origin, cx);
        let kind = match (attrs.oneway, &sig.output) {
            (Some(span), _) => MethodKind::Oneway(span),
            (None, ReturnType::Type(_, ty)) => stream_kind(ty, attrs.raises.is_some(), origin, cx),
            (None, ReturnType::Default) => MethodKind::Normal,
        };
        let (reply, raises) = match (attrs.raises, result_ok(&output)) {
            (Some(_), Some(ok)) => (ok.clone(), true),
            (Some(span), None) => {
                let msg = "#[rmi(raises)] needs a method returning `Result<T, E>` (or an alias named `Result`, such as `io::Result<T>`) with `E: Into<RemoteError>`";
                cx.error(origin, syn::Error::new(span, msg));
                (output.clone(), false)
            }
            (None, _) => (output.clone(), false),
        };
        let access = match (attrs.property, attrs.setter) {
            (Some(_), Some(span)) => {
                let msg = "a method is a property's getter or its setter, not both: write a `set_` method of its own";
                cx.error(origin, syn::Error::new(span, msg));
                Access::Call
            }
            (Some(span), None) => Access::Get(span),
            (None, Some(span)) => Access::Set(span),
            (None, None) => Access::Call,
        };
        let (wire_name, wire_span) = match &attrs.wire_name {
            Some(lit) => (lit.value(), lit.span()),
            // `set_verbose` sets `verbose`.
            None if access.is_set() => {
                let name = sig.ident.unraw().to_string();
                match name.strip_prefix("set_").filter(|p| !p.is_empty()) {
                    Some(property) => (property.to_owned(), sig.ident.span()),
                    None => {
                        let msg = "a setter's name says which property it sets: `set_verbose` sets `verbose`; rename it, or name the property with #[rmi(setter, name = \"...\")]";
                        cx.error(origin, syn::Error::new(sig.ident.span(), msg));
                        (name, sig.ident.span())
                    }
                }
            }
            // `r#type` is called `type` on the wire, as Python and Pyro spell it.
            None => (sig.ident.unraw().to_string(), sig.ident.span()),
        };
        Method {
            origin,
            ident: &sig.ident,
            wire_name,
            wire_span,
            named: attrs.wire_name.is_some(),
            carried_attrs: attrs.carried,
            args,
            reply,
            raises,
            output,
            kind,
            idempotent: attrs.idempotent,
            keep_none: attrs.keep_none,
            access,
        }
    }
}

/// A stream method returns `RemoteStream<T>`, or, to fail before its first item,
/// `Result<RemoteStream<T>, E>` with `#[rmi(raises)]`; anything else is called normally.
fn stream_kind<'a>(
    declared: &'a Type,
    raises: bool,
    origin: Origin,
    cx: &mut Ctxt,
) -> MethodKind<'a> {
    if let Some(item) = stream_item(declared) {
        return MethodKind::Stream(item);
    }
    match result_ok(declared).and_then(stream_item) {
        Some(item) if raises => MethodKind::Stream(item),
        Some(_) => {
            let msg = "a `Result` of a stream cannot travel as a value: add #[rmi(raises)], so that an `Err` is raised before the first item and an `Ok` streams";
            cx.error(origin, syn::Error::new_spanned(declared, msg));
            MethodKind::Normal
        }
        None => MethodKind::Normal,
    }
}

/// The error for a trait item other than a method, at its name.
fn not_a_method(item: &TraitItem) -> syn::Error {
    let msg = "#[remote] traits may contain only methods (no associated types, consts or macros)";
    match item {
        TraitItem::Type(t) => syn::Error::new_spanned(&t.ident, msg),
        TraitItem::Const(c) => syn::Error::new_spanned(&c.ident, msg),
        TraitItem::Macro(m) => syn::Error::new_spanned(&m.mac, msg),
        other => syn::Error::new_spanned(other, msg),
    }
}

/// The trait itself: no generics, no `where` clause, not `unsafe`.
fn check_header(item: &ItemTrait, cx: &mut Ctxt) {
    let generics = &item.generics;
    let forbidden = [
        (non_empty(generics), "#[remote] traits cannot be generic"),
        (
            tokens(&generics.where_clause),
            "#[remote] traits cannot have `where` clauses",
        ),
        (
            tokens(&item.unsafety),
            "#[remote] traits cannot be `unsafe`",
        ),
    ];
    forbid(forbidden, Origin::Header, cx);
    // A supertrait's methods would be neither served nor proxied: refused, not ignored.
    const MARKERS: &[&str] = &["Send", "Sync", "Sized", "Unpin"];
    for bound in &item.supertraits {
        let syn::TypeParamBound::Trait(t) = bound else {
            continue;
        };
        let marker = t
            .path
            .segments
            .last()
            .is_some_and(|s| s.arguments.is_none() && MARKERS.iter().any(|m| s.ident == m));
        if !marker {
            cx.error(
                Origin::Header,
                syn::Error::new_spanned(
                    t,
                    "#[remote] traits cannot have supertraits (other than `Send`, `Sync` and \
                     lifetimes): a supertrait's methods would be neither served nor proxied; \
                     declare them in this trait",
                ),
            );
        }
    }
}

/// A plain `async fn`: no generics, `where` clause, `unsafe`, ABI, `const` or variadic.
fn check_signature(sig: &Signature, origin: Origin, cx: &mut Ctxt) {
    if sig.asyncness.is_none() {
        let e = syn::Error::new(sig.fn_token.span, "remote methods must be `async fn`");
        cx.error(origin, e);
    }
    let forbidden = [
        (non_empty(&sig.generics), "remote methods cannot be generic"),
        (
            tokens(&sig.generics.where_clause),
            "remote methods cannot have `where` clauses",
        ),
        (tokens(&sig.unsafety), "remote methods cannot be `unsafe`"),
        (tokens(&sig.abi), "remote methods cannot declare an ABI"),
        (tokens(&sig.constness), "remote methods cannot be `const`"),
        (tokens(&sig.variadic), "remote methods cannot be variadic"),
    ];
    forbid(forbidden, origin, cx);
}

/// Reports each node that is present, in order, with its message.
fn forbid<const N: usize>(rules: [(Option<TokenStream>, &str); N], origin: Origin, cx: &mut Ctxt) {
    for (node, msg) in rules {
        if let Some(node) = node {
            cx.error(origin, syn::Error::new_spanned(node, msg));
        }
    }
}

/// The tokens of `node`, if present.
fn tokens(node: &Option<impl ToTokens>) -> Option<TokenStream> {
    node.as_ref().map(ToTokens::to_token_stream)
}

/// The tokens of `generics` when it declares parameters (a `where` clause alone is checked apart).
fn non_empty(generics: &Generics) -> Option<TokenStream> {
    let declared = !generics.params.is_empty();
    declared.then(|| generics.to_token_stream())
}

/// The first parameter is `&self`: calls run concurrently, so there is no `&mut self`.
fn check_receiver(sig: &Signature, origin: Origin, cx: &mut Ctxt) {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if is_shared_self(r) => {}
        Some(FnArg::Receiver(r)) if r.lifetime().is_some() && r.mutability.is_none() => {
            let msg = "remote methods take `&self` without a named lifetime: the daemon lends its object to each call";
            cx.error(origin, syn::Error::new_spanned(r, msg));
        }
        Some(FnArg::Receiver(r)) => {
            let msg = "remote methods take `&self` (calls run concurrently)";
            cx.error(origin, syn::Error::new_spanned(r, msg));
        }
        _ => {
            let msg = "remote methods take `&self` as their first parameter";
            cx.error(origin, syn::Error::new(sig.ident.span(), msg));
        }
    }
}

/// The most arguments a remote method may take: serde's largest tuple.
const MAX_ARGS: usize = 16;

/// The arguments after the receiver; each must be a plain, unreserved name and an owned type.
fn lower_args<'a>(sig: &'a Signature, origin: Origin, cx: &mut Ctxt) -> Vec<Arg<'a>> {
    let mut args = Vec::new();
    for (n, input) in sig.inputs.iter().skip(1).enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        // The arguments travel as one tuple, and serde's tuples end at 16.
        if n == MAX_ARGS {
            let msg = format!(
                "a remote method takes at most {MAX_ARGS} arguments (they travel as one tuple, \
                 and serde's end at {MAX_ARGS}); pass the rest in a struct"
            );
            cx.error(origin, syn::Error::new_spanned(pt, msg));
        }
        let ident = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => &pi.ident,
            other => {
                let msg = "remote method arguments must be plain identifiers, not patterns";
                cx.error(origin, syn::Error::new_spanned(other, msg));
                continue;
            }
        };
        if let Some(attr) = pt
            .attrs
            .iter()
            .find(|a| a.path().is_ident("cfg") || a.path().is_ident("cfg_attr"))
        {
            let msg = "`#[cfg]` on a parameter is not supported: the parameters are the method's wire signature; put `#[cfg]` on the whole method";
            cx.error(origin, syn::Error::new_spanned(attr, msg));
            continue;
        }
        if let Some(attr) = pt.attrs.iter().find(|a| a.path().is_ident("rmi")) {
            let msg = "`#[rmi]` is not supported on a parameter: a keyword argument takes the parameter's own name (write it as Python does, `newLevel`; non-snake-case names are allowed), and the method's options go on the method";
            cx.error(origin, syn::Error::new_spanned(attr, msg));
            continue;
        }
        // (`r#__args` is `__args`.)
        if ident.unraw().to_string().starts_with("__") {
            let msg = "argument names starting with `__` are reserved for generated code";
            cx.error(origin, syn::Error::new_spanned(ident, msg));
            continue;
        }
        if let Some(tokens) = borrowed_or_impl(&pt.ty) {
            let msg = "remote method arguments must be owned types that implement serde's traits (e.g. `String`, not `&str`; no `impl Trait`, `Self` or `!`)";
            cx.error(origin, syn::Error::new_spanned(tokens, msg));
            continue;
        }
        args.push(Arg { ident, ty: &pt.ty });
    }
    args
}

/// The first `'_` in `tokens`, if any.
fn elided_lifetime(tokens: TokenStream) -> Option<TokenStream> {
    use proc_macro2::{Spacing, TokenTree};
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '\'' && p.spacing() == Spacing::Joint => {
                if let Some(TokenTree::Ident(name)) = tokens.peek() {
                    if name == "_" {
                        return Some(quote::quote!(#p #name));
                    }
                }
            }
            TokenTree::Group(g) => {
                if let Some(found) = elided_lifetime(g.stream()) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first `Cow<…>` in `ty` written without its lifetime (`Cow<str>`, which elision ties to
/// `&self` as `Cow<'_, str>` is, with no `'_` to see), if any.
fn hidden_cow_lifetime(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) => path.path.segments.iter().find_map(|segment| {
            let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
                return None;
            };
            let lifetime = args
                .args
                .iter()
                .any(|a| matches!(a, syn::GenericArgument::Lifetime(_)));
            if segment.ident == "Cow" && !lifetime {
                return Some(segment);
            }
            args.args.iter().find_map(|a| match a {
                syn::GenericArgument::Type(ty) => hidden_cow_lifetime(ty),
                _ => None,
            })
        }),
        Type::Tuple(tuple) => tuple.elems.iter().find_map(hidden_cow_lifetime),
        Type::Array(array) => hidden_cow_lifetime(&array.elem),
        Type::Paren(paren) => hidden_cow_lifetime(&paren.elem),
        Type::Group(group) => hidden_cow_lifetime(&group.elem),
        _ => None,
    }
}

/// The declared output, `()` when there is none; it must be an owned type.
fn lower_output(sig: &Signature, origin: Origin, cx: &mut Ctxt) -> Type {
    match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Some(tokens) = borrowed_or_impl(ty) {
                let msg = "remote methods must return an owned type (not a reference, `impl Trait`, `Self` or `!`)";
                cx.error(origin, syn::Error::new_spanned(tokens, msg));
            } else if let Some(tokens) = elided_lifetime(ty.to_token_stream())
                .or_else(|| hidden_cow_lifetime(ty).map(|s| s.to_token_stream()))
            {
                // (Accepted in arguments, which the server decodes; a result's `'_` would tie
                // what the caller gets to the proxy, or a batch's slot to the batch. `Cow<str>`
                // is `Cow<'_, str>` with its `'_` left out.)
                let msg = "a remote method's result cannot borrow: the caller gets it from another process; write `'static` (`Cow<'static, str>`) or an owned type";
                cx.error(origin, syn::Error::new_spanned(tokens, msg));
            }
            (**ty).clone()
        }
    }
}
