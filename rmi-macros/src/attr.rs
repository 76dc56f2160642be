//! The `#[rmi(...)]` attribute of a method (wire name, `oneway`, `idempotent`, `raises`,
//! `property`, `setter`), and the attributes carried over to generated items.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{token, Attribute, LitStr, Token};

use crate::ctxt::{Ctxt, Origin};

/// What a method's attributes say: `#[rmi(...)]` options, and the attributes to carry over.
#[derive(Default)]
pub(crate) struct MethodAttrs {
    /// `name = "..."`: the wire name, if not the Rust name.
    pub(crate) wire_name: Option<LitStr>,
    /// Set by the first `name`, even an empty one, so that a second is reported too.
    named: bool,
    /// `oneway`, at its span.
    pub(crate) oneway: Option<Span>,
    /// `idempotent`.
    pub(crate) idempotent: bool,
    /// `keep_none`: a `None` argument is sent as one, never left out as a trailing `None`.
    pub(crate) keep_none: bool,
    /// `raises`, at its span: an `Err` of the `Result` is raised as the remote exception.
    pub(crate) raises: Option<Span>,
    /// `property`, at its span: the method reads a Pyro property (`__getattr__`).
    pub(crate) property: Option<Span>,
    /// `setter`, at its span: the method sets a Pyro property (`__setattr__`).
    pub(crate) setter: Option<Span>,
    /// `#[doc]`, `#[cfg]`, `#[deprecated]` and lint levels, copied to generated items.
    pub(crate) carried: Vec<Attribute>,
}

impl MethodAttrs {
    /// Reads `#[rmi(...)]` and keeps `#[doc]`, `#[cfg]`, `#[deprecated]` and `#[allow]` (a lint
    /// the user allows on a method, `non_snake_case` for a parameter named as its Python
    /// keyword say, is allowed on the generated methods too); an `#[expect]`, met by the trait's
    /// method, is an `#[allow]` on the copies, whose lints may differ, and so is either inside a
    /// `#[cfg_attr]`. Inner attributes (a default body's `#![allow]` or `//!` line) stay in the
    /// body. An error in an `#[rmi(...)]` ends the reading of that attribute.
    pub(crate) fn from_syn(attrs: &[Attribute], origin: Origin, cx: &mut Ctxt) -> Self {
        let mut out = MethodAttrs::default();
        for attr in attrs {
            if !matches!(attr.style, syn::AttrStyle::Outer) {
                continue;
            }
            if attr.path().is_ident("rmi") {
                if let Err(e) = attr.parse_nested_meta(|meta| out.option(&meta)) {
                    cx.error(origin, e);
                }
            } else if ["doc", "cfg", "deprecated", "allow"]
                .iter()
                .any(|name| attr.path().is_ident(name))
            {
                out.carried.push(attr.clone());
            } else if let Some(allowed) = lints_allowed(attr) {
                out.carried.push(allowed);
            } else if let Some(inner) = hidden_in_cfg_attr(attr) {
                let msg = format!(
                    "`#[{inner}]` inside `#[cfg_attr]` is not supported on a remote method: the \
                     macro cannot see what it stands for; write it plainly, or write the method \
                     twice under `#[cfg]`"
                );
                cx.error(origin, syn::Error::new_spanned(attr, msg));
            }
        }
        out
    }

    /// One option of `#[rmi(...)]`.
    fn option(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if std::mem::replace(&mut self.named, true) {
                let msg = "the wire name is given more than once";
                return Err(syn::Error::new(lit.span(), msg));
            }
            if lit.value().is_empty() {
                return Err(syn::Error::new(lit.span(), "the wire name cannot be empty"));
            }
            self.wire_name = Some(lit);
        } else if meta.path.is_ident("oneway") {
            self.oneway = Some(flag(meta, "oneway")?);
        } else if meta.path.is_ident("idempotent") {
            flag(meta, "idempotent")?;
            self.idempotent = true;
        } else if meta.path.is_ident("keep_none") {
            flag(meta, "keep_none")?;
            self.keep_none = true;
        } else if meta.path.is_ident("raises") {
            self.raises = Some(flag(meta, "raises")?);
        } else if meta.path.is_ident("property") {
            self.property = Some(flag(meta, "property")?);
        } else if meta.path.is_ident("setter") {
            self.setter = Some(flag(meta, "setter")?);
        } else {
            return Err(meta.error(
                "unknown #[rmi] option; expected `name = \"...\"`, `oneway`, `idempotent`, `keep_none`, `raises`, `property` or `setter`",
            ));
        }
        Ok(())
    }
}

/// An `#[expect(...)]`, or a `#[cfg_attr(predicate, ...)]` of lint levels only, as the
/// attribute to put on generated copies: with each `expect` an `allow` (an expectation the copy
/// does not meet would warn).
fn lints_allowed(attr: &Attribute) -> Option<Attribute> {
    let as_allow = |meta: &syn::Meta| -> Option<syn::Meta> {
        let syn::Meta::List(list) = meta else {
            return None;
        };
        if list.path.is_ident("allow") {
            return Some(meta.clone());
        }
        if !list.path.is_ident("expect") {
            return None;
        }
        let mut list = list.clone();
        list.path = syn::Ident::new("allow", list.path.segments[0].ident.span()).into();
        Some(syn::Meta::List(list))
    };
    if attr.path().is_ident("expect") {
        let mut allowed = attr.clone();
        allowed.meta = as_allow(&attr.meta)?;
        return Some(allowed);
    }
    if !attr.path().is_ident("cfg_attr") {
        return None;
    }
    let list = attr
        .parse_args_with(syn::punctuated::Punctuated::<syn::Meta, Token![,]>::parse_terminated)
        .ok()?;
    let mut metas = list.iter();
    let predicate = metas.next()?;
    let lints = metas.map(as_allow).collect::<Option<Vec<_>>>()?;
    if lints.is_empty() {
        return None;
    }
    Some(syn::parse_quote!(#[cfg_attr(#predicate, #(#lints),*)]))
}

/// The attribute a `#[cfg_attr(predicate, ...)]` would add that the macro must see (`rmi`,
/// `cfg`, `deprecated`): its meaning is decided after the macro runs, which would see the
/// `#[cfg_attr]` only (and leave `rmi` to the compiler, which does not know it).
pub(crate) fn hidden_in_cfg_attr(attr: &Attribute) -> Option<&'static str> {
    if !attr.path().is_ident("cfg_attr") {
        return None;
    }
    let list = attr
        .parse_args_with(syn::punctuated::Punctuated::<syn::Meta, Token![,]>::parse_terminated)
        .ok()?;
    list.iter().skip(1).find_map(|meta| {
        ["rmi", "cfg", "deprecated", "cfg_attr"]
            .into_iter()
            .find(|name| meta.path().is_ident(name))
    })
}

/// A flag option (`oneway`, `idempotent`, `keep_none`, `raises`, `property`, `setter`), at its span: one given a value, as in
/// `oneway = true` or `oneway(true)`, is reported as such rather than as a syntax error.
fn flag(meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<Span> {
    let span = meta
        .path
        .get_ident()
        .map_or_else(Span::call_site, |i| i.span());
    if meta.input.peek(Token![=]) || meta.input.peek(token::Paren) {
        let msg = format!("`{name}` takes no value: write `#[rmi({name})]`, or leave it out");
        return Err(syn::Error::new(span, msg));
    }
    Ok(span)
}
