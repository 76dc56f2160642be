//! `{Trait}Server<T>`: wraps an implementation and dispatches calls to it by wire name.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;

use super::{arg_names, Names};
use crate::model::{Access, Method, MethodKind, Service};
use crate::ty::is_byte_vec;

/// The `{Trait}Server<T>` type.
pub(super) fn server_struct(
    service: &Service<'_>,
    names: &Names<'_>,
    p: &TokenStream,
) -> TokenStream {
    let vis = service.vis;
    let server = &names.server;
    let contract = names.contract;
    let doc = format!("Serves a [`{contract}`] implementation: register it in a daemon.");
    let name = server.to_string();
    quote! {
        #[doc = #doc]
        #vis struct #server<__T> {
            inner: #p::std::sync::Arc<__T>,
        }

        impl<__T> ::core::fmt::Debug for #server<__T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name).finish_non_exhaustive()
            }
        }
    }
}

/// The constructors and the accessor of `{Trait}Server<T>`.
pub(super) fn server_impl(names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let server = &names.server;
    let contract = names.contract;
    quote! {
        // (A deprecated contract is the user's to hear about, not the generated code's.)
        #[allow(deprecated)]
        impl<__T: #contract> #server<__T> {
            /// Wraps `object` for registration in a daemon.
            pub fn new(object: __T) -> Self {
                #p::serving();
                Self { inner: #p::std::sync::Arc::new(object) }
            }

            /// Wraps an object that is shared with other code.
            pub fn from_arc(object: #p::std::sync::Arc<__T>) -> Self {
                #p::serving();
                Self { inner: object }
            }

            /// The served object.
            pub fn get_ref(&self) -> &__T {
                &self.inner
            }
        }
    }
}

/// `Clone` for `{Trait}Server<T>`, without requiring `T: Clone` (the object is shared).
pub(super) fn clone_impl(names: &Names<'_>) -> TokenStream {
    let server = &names.server;
    quote! {
        impl<__T> ::core::clone::Clone for #server<__T> {
            fn clone(&self) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }
    }
}

/// `Dispatch` for `{Trait}Server<T>`: the method list, and one `match` arm per wire name.
pub(super) fn dispatch_impl(
    service: &Service<'_>,
    names: &Names<'_>,
    p: &TokenStream,
) -> TokenStream {
    let server = &names.server;
    let contract = names.contract;
    let metadata_pushes = service.methods.iter().map(|m| metadata_push(m, p));
    let arms = service
        .methods
        .iter()
        .filter(|m| matches!(m.access, Access::Call))
        .map(|m| dispatch_arm(m, names, p));
    let property_arms = property_arms(service, names, p);
    quote! {
        // `deprecated`: a deprecated method is still served; its callers get the warning.
        // `non_snake_case`: a parameter may be named as its Python keyword (`newLevel`).
        #[allow(clippy::let_unit_value, clippy::unit_arg, unused_variables, unused_mut, deprecated, non_snake_case)]
        impl<__T: #contract> #p::Dispatch for #server<__T> {
            fn metadata(&self) -> #p::Metadata {
                <Self as #p::Dispatch>::describe()
            }

            fn describe() -> #p::Metadata {
                let mut __methods = #p::std::vec::Vec::new();
                let mut __oneway = #p::std::vec::Vec::new();
                let mut __attrs: #p::std::vec::Vec<#p::std::string::String> = #p::std::vec::Vec::new();
                #(#metadata_pushes)*
                #p::Metadata { methods: __methods, oneway: __oneway, attrs: __attrs }
            }

            fn dispatch<'__a>(
                &'__a self,
                __method: &'__a str,
                __args: #p::Args,
            ) -> #p::BoxFuture<'__a, #p::std::result::Result<#p::Outcome, #p::RemoteError>> {
                #p::std::boxed::Box::pin(async move {
                    match __method {
                        #(#arms)*
                        #property_arms
                        _ => #p::std::result::Result::Err(#p::RemoteError::unknown_method("", __method)),
                    }
                })
            }
        }
    }
}

/// Adds the method's wire name to the metadata (and to the oneway list if it is oneway); a
/// property's name to the attributes, once for its getter and setter.
fn metadata_push(m: &Method<'_>, p: &TokenStream) -> TokenStream {
    let cfgs: Vec<_> = m.cfg_attrs().collect();
    let wire = &m.wire_name;
    if !matches!(m.access, Access::Call) {
        return quote! {
            #(#cfgs)*
            if !__attrs.iter().any(|__a| __a == #wire) {
                __attrs.push(#p::std::string::String::from(#wire));
            }
        };
    }
    let oneway = matches!(m.kind, MethodKind::Oneway(_)).then(|| {
        quote! { #(#cfgs)* __oneway.push(#p::std::string::String::from(#wire)); }
    });
    quote! {
        #(#cfgs)* __methods.push(#p::std::string::String::from(#wire));
        #oneway
    }
}

/// Checks, each spanned at a type as written in the signature, that the arguments and results
/// have the serde traits the generated code needs: a type without them is then named where it
/// is written (`the trait bound `Point: Serialize` is not satisfied` under `Point`), not only
/// at the attribute. Under `server_only` the server's needs only: arguments decoded, results
/// encoded.
pub(super) fn type_checks(
    service: &Service<'_>,
    p: &TokenStream,
    server_only: bool,
) -> TokenStream {
    let (arg_bound, reply_bound) = if server_only {
        (
            quote!(#p::serde::de::DeserializeOwned),
            quote!(#p::serde::Serialize),
        )
    } else {
        (
            quote!(#p::serde::de::DeserializeOwned + #p::serde::Serialize),
            quote!(#p::serde::Serialize + #p::serde::de::DeserializeOwned),
        )
    };
    let checks = service.methods.iter().map(|m| {
        let cfgs = m.cfg_attrs();
        let args = m.args.iter().map(|arg| {
            let ty = arg.ty;
            quote_spanned!(syn::spanned::Spanned::span(ty)=> __arg::<#ty>();)
        });
        let reply = match &m.kind {
            MethodKind::Stream(item) => Some(*item),
            MethodKind::Oneway(_) => None,
            MethodKind::Normal => Some(&m.reply),
        };
        let reply =
            reply.map(|ty| quote_spanned!(syn::spanned::Spanned::span(ty)=> __reply::<#ty>();));
        // A raised error must become a remote exception: checked here, at the declared type,
        // so that a wrong one is reported at its method, not at the attribute.
        let raises = m.raises.then(|| {
            let output = &m.output;
            quote_spanned!(syn::spanned::Spanned::span(output)=>
                __raises(::core::marker::PhantomData::<#output>);)
        });
        quote! { #(#cfgs)* { #(#args)* #reply #raises } }
    });
    quote! {
        const _: () = {
            #[allow(dead_code, deprecated)]
            fn __types() {
                fn __arg<__A: #arg_bound>() {}
                fn __reply<__R: #reply_bound>() {}
                fn __raises<__T, __E: ::core::convert::Into<#p::RemoteError>>(
                    _: ::core::marker::PhantomData<::core::result::Result<__T, __E>>,
                ) {}
                #(#checks)*
            }
        };
    }
}

/// The arms of Pyro's `__getattr__` and `__setattr__` pseudo-methods: the property's name is
/// their first argument, the value the second. (An object without properties answers them
/// too, with Pyro's `AttributeError`, not as an unknown method.)
fn property_arms(service: &Service<'_>, names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let getters = service
        .methods
        .iter()
        .filter(|m| matches!(m.access, Access::Get(_)))
        .map(|m| dispatch_arm(m, names, p));
    let setters = service
        .methods
        .iter()
        .filter(|m| m.access.is_set())
        .map(|m| dispatch_arm(m, names, p));
    quote! {
        "__getattr__" => {
            let (__name,): (#p::std::string::String,) = __args
                .decode_named(&["name"])
                .map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?;
            match __name.as_str() {
                #(#getters)*
                _ => #p::std::result::Result::Err(#p::RemoteError::unknown_attribute(&__name)),
            }
        }
        "__setattr__" => {
            let __name = __args
                .attribute_name()
                .map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?;
            match __name.as_str() {
                #(#setters)*
                _ => #p::std::result::Result::Err(#p::RemoteError::unknown_attribute(&__name)),
            }
        }
    }
}

/// The `match` arm for the method: decode the arguments, call, encode the result. A getter's
/// arm is matched by the property's name and decodes nothing more; a setter's decodes the
/// name again before the value (Pyro sends `(name, value)`).
fn dispatch_arm(m: &Method<'_>, names: &Names<'_>, p: &TokenStream) -> TokenStream {
    let cfgs = m.cfg_attrs();
    let wire = &m.wire_name;
    let ident = m.ident;
    let contract = names.contract;
    let arg_names = arg_names(m);
    let (lead_ident, lead_type, lead_name) = if m.access.is_set() {
        (
            Some(quote!(_,)),
            Some(quote!(#p::std::string::String,)),
            Some(quote!("name",)),
        )
    } else {
        (None, None, None)
    };
    // A `Vec<u8>` argument or result crosses as bytes, in one copy (see `args_tuple`).
    let types = m.args.iter().map(|arg| {
        let ty = arg.ty;
        if is_byte_vec(ty) {
            quote!(#p::serde_bytes::ByteBuf)
        } else {
            quote!(#ty)
        }
    });
    let unwrap_bytes = m.args.iter().filter(|arg| is_byte_vec(arg.ty)).map(|arg| {
        let ident = arg.ident;
        quote! { let #ident = #p::serde_bytes::ByteBuf::into_vec(#ident); }
    });
    let bytes = is_byte_vec(&m.reply);
    let encode = match &m.kind {
        MethodKind::Stream(_) if m.raises => quote! { #p::encode_raised_stream(&__args, __result) },
        MethodKind::Stream(_) => quote! { #p::encode_stream(&__args, __result) },
        _ if m.raises && bytes => quote! { #p::encode_raised_bytes(&__args, __result) },
        _ if m.raises => quote! { #p::encode_raised(&__args, __result) },
        _ if bytes => quote! { #p::encode_bytes_result(&__args, __result) },
        _ => quote! { #p::encode_result(&__args, &__result) },
    };
    // A keyword argument `r#match` is `match` to a Python caller; a setter's is `value`.
    let param_names: Vec<String> = if m.access.is_set() {
        vec!["value".to_owned()]
    } else {
        arg_names.iter().map(|i| i.unraw().to_string()).collect()
    };
    let decode = if matches!(m.access, Access::Get(_)) {
        // (`__getattr__` decoded its one argument, the name.)
        TokenStream::new()
    } else if arg_names.is_empty() {
        quote! { __args.decode_named::<[(); 0]>(&[]).map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?; }
    } else if m.args.iter().any(|arg| is_byte_vec(arg.ty)) {
        // A large `Vec<u8>` that arrived in a buffer of its own is handed over, not copied.
        quote! {
            let mut __args = __args;
            let (#lead_ident #(#arg_names,)*): (#lead_type #(#types,)*) =
                __args.take_named(&[#lead_name #(#param_names),*]).map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?;
            #(#unwrap_bytes)*
        }
    } else {
        quote! {
            let (#lead_ident #(#arg_names,)*): (#lead_type #(#types,)*) =
                __args.decode_named(&[#lead_name #(#param_names),*]).map_err(|__e| #p::RemoteError::bad_arguments(__method, __e))?;
            #(#unwrap_bytes)*
        }
    };
    quote! {
        #(#cfgs)*
        #wire => {
            #decode
            let __result = <__T as #contract>::#ident(&*self.inner, #(#arg_names),*).await;
            #encode
        }
    }
}

/// Two methods whose wire names the macro let pass because `#[cfg]` may keep them apart (the
/// same method for two platforms, say): a `compile_error!` for the configurations where both
/// are compiled in.
pub(super) fn conditional_clashes(service: &Service<'_>) -> TokenStream {
    let mut out = TokenStream::new();
    for (i, later) in service.methods.iter().enumerate() {
        for earlier in &service.methods[..i] {
            if earlier.wire_name != later.wire_name || !earlier.access.clashes_with(later.access) {
                continue;
            }
            let predicates = earlier
                .cfg_attrs()
                .chain(later.cfg_attrs())
                .filter_map(|a| a.meta.require_list().ok())
                .map(|list| &list.tokens);
            let msg = format!(
                "duplicate wire name {:?} where both methods are compiled in: each needs its own #[rmi(name = ...)]",
                later.wire_name
            );
            out.extend(quote_spanned! { later.wire_span=>
                #[cfg(all(#(#predicates),*))]
                ::core::compile_error! { #msg }
            });
        }
    }
    out
}
