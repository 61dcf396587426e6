//! `#[orca_task]`: turns an async function into an Orcastra task. See the
//! `orcastra::task` documentation; this crate is used through `orcastra`.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Error, Expr, ExprLit, FnArg, GenericArgument, ItemFn, Lit, LitStr, MetaNameValue, Pat,
    PathArguments, ReturnType, Token, Type,
};

/// Makes an async function a task. The function stays as it was; next to it
/// comes a module of the same name with the task's definition: `Task`,
/// which implements `orcastra::task::Task`, `task()`, which returns it, and
/// `submit(&orcastra, arguments…)`, typed like the function.
///
/// Options: `name = "…"` (default: the function's name), `queue = "…"`,
/// `retries = N`, `backoff = "1s"` (the first retry's delay, doubling),
/// `timeout = "30s"`, `priority = N` (0–3, higher first; default 0),
/// `max_deliveries = N`.
#[proc_macro_attribute]
pub fn orca_task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = syn::parse_macro_input!(item as ItemFn);
    match expand(attr.into(), &function) {
        Ok(tokens) => tokens.into(),
        // Keep the function, so that one mistake gives one error.
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#function #error).into()
        }
    }
}

/// The options given in `#[orca_task(...)]`, as expressions of the
/// `TaskOptions` fields they set.
struct Options {
    name: Option<LitStr>,
    fields: Vec<TokenStream2>,
}

fn parse_options(attr: TokenStream2) -> syn::Result<Options> {
    let pairs = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(attr)?;
    let mut options = Options {
        name: None,
        fields: Vec::new(),
    };
    for pair in pairs {
        let key = pair
            .path
            .get_ident()
            .map(|ident| ident.to_string())
            .unwrap_or_default();
        let value = &pair.value;
        let field = match key.as_str() {
            "name" => {
                options.name = Some(string(value)?);
                continue;
            }
            "queue" => {
                let queue = string(value)?;
                quote!(queue: #queue)
            }
            "retries" => {
                let retries = integer::<u32>(value)?;
                quote!(retries: #retries)
            }
            "max_deliveries" => {
                let deliveries = integer::<u32>(value)?;
                if deliveries == 0 {
                    return Err(Error::new(
                        value.span(),
                        "max_deliveries must be at least 1",
                    ));
                }
                quote!(max_deliveries: #deliveries)
            }
            "priority" => {
                let priority = integer::<u8>(value)?;
                if priority > 3 {
                    return Err(Error::new(
                        value.span(),
                        "priority must be 0 (the default) to 3 (the highest)",
                    ));
                }
                quote!(priority: #priority)
            }
            "timeout" => {
                let millis = duration_millis(value)?;
                quote!(timeout: ::core::option::Option::Some(
                    ::core::time::Duration::from_millis(#millis)
                ))
            }
            "backoff" => {
                let millis = duration_millis(value)?;
                quote!(backoff: ::orcastra::task::Backoff {
                    first: ::core::time::Duration::from_millis(#millis),
                    ..::core::default::Default::default()
                })
            }
            _ => {
                return Err(Error::new(
                    pair.path.span(),
                    "unknown #[orca_task] option; expected one of: name, queue, retries, \
                     backoff, timeout, priority, max_deliveries",
                ));
            }
        };
        options.fields.push(field);
    }
    Ok(options)
}

fn string(value: &Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(text.clone()),
        other => Err(Error::new(other.span(), "expected a string literal")),
    }
}

fn integer<N>(value: &Expr) -> syn::Result<N>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(number),
            ..
        }) => number.base10_parse().map_err(|_| {
            Error::new(
                number.span(),
                format!(
                    "expected a whole number that fits in a {}",
                    std::any::type_name::<N>()
                ),
            )
        }),
        other => Err(Error::new(other.span(), "expected an integer literal")),
    }
}

fn duration_millis(value: &Expr) -> syn::Result<u64> {
    let text = string(value)?;
    let duration = humantime::parse_duration(&text.value()).map_err(|e| {
        Error::new(
            text.span(),
            format!("not a duration ({e}); write it like \"30s\", \"500ms\" or \"2m\""),
        )
    })?;
    u64::try_from(duration.as_millis())
        .map_err(|_| Error::new(text.span(), "this duration is too long"))
}

/// One argument of the task function: decoded from the queue, or the
/// task's context.
enum Argument<'a> {
    Decoded { name: &'a syn::Ident, ty: &'a Type },
    Context,
}

fn arguments(function: &ItemFn) -> syn::Result<Vec<Argument<'_>>> {
    let mut arguments = Vec::new();
    for input in &function.sig.inputs {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                return Err(Error::new(
                    receiver.span(),
                    "a task is a free function, not a method",
                ));
            }
            FnArg::Typed(typed) => typed,
        };
        if is_context(&typed.ty) {
            arguments.push(Argument::Context);
            continue;
        }
        let Pat::Ident(pattern) = &*typed.pat else {
            return Err(Error::new(
                typed.pat.span(),
                "name this argument: a task's arguments are decoded by name and position, \
                 not destructured",
            ));
        };
        check_owned(&typed.ty)?;
        arguments.push(Argument::Decoded {
            name: &pattern.ident,
            ty: &typed.ty,
        });
    }
    if arguments
        .iter()
        .filter(|a| matches!(a, Argument::Context))
        .count()
        > 1
    {
        return Err(Error::new(
            function.sig.inputs.span(),
            "a task takes at most one TaskContext",
        ));
    }
    Ok(arguments)
}

fn is_context(ty: &Type) -> bool {
    matches!(ty, Type::Path(path)
        if path.path.segments.last().is_some_and(|s| s.ident == "TaskContext"))
}

/// Arguments come out of the queue, so they cannot borrow.
fn check_owned(ty: &Type) -> syn::Result<()> {
    let problem = match ty {
        Type::Reference(_) => {
            "task arguments are decoded from the queue, so they must be owned \
                               types: `String`, not `&str`"
        }
        Type::ImplTrait(_) => {
            "task arguments are decoded from the queue, so they need a \
                               concrete type, not `impl Trait`"
        }
        Type::TraitObject(_) | Type::BareFn(_) | Type::Ptr(_) | Type::Never(_) => {
            "task arguments must be data that serde can decode"
        }
        _ => return Ok(()),
    };
    Err(Error::new(ty.span(), problem))
}

/// The task's output type, and whether the function returns a `Result`
/// whose error becomes the task's error.
fn output(function: &ItemFn) -> (TokenStream2, bool) {
    let ReturnType::Type(_, ty) = &function.sig.output else {
        return (quote!(()), false);
    };
    if let Type::Path(path) = &**ty
        && let Some(last) = path.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(generics) = &last.arguments
        && generics.args.len() == 2
        && let Some(GenericArgument::Type(ok)) = generics.args.first()
    {
        return (quote!(#ok), true);
    }
    (quote!(#ty), false)
}

fn expand(attr: TokenStream2, function: &ItemFn) -> syn::Result<TokenStream2> {
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        return Err(Error::new(
            signature.fn_token.span(),
            "#[orca_task] needs an `async fn`",
        ));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(Error::new(
            signature.generics.span(),
            "a task cannot be generic: a worker must know the argument types to decode them",
        ));
    }
    if let Some(variadic) = &signature.variadic {
        return Err(Error::new(variadic.span(), "a task cannot be variadic"));
    }
    let options = parse_options(attr)?;
    let arguments = arguments(function)?;
    let ident = &signature.ident;
    let visibility = &function.vis;
    let name = options
        .name
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let fields = &options.fields;

    let decoded: Vec<_> = arguments
        .iter()
        .filter_map(|a| match a {
            Argument::Decoded { name, ty } => Some((*name, *ty)),
            Argument::Context => None,
        })
        .collect();
    let names: Vec<_> = decoded.iter().map(|(name, _)| *name).collect();
    let types: Vec<_> = decoded.iter().map(|(_, ty)| *ty).collect();
    // Arguments travel as a JSON array; `()` would be `null`, `[(); 0]` is `[]`.
    let (args_type, args_pattern) = if names.is_empty() {
        (quote!([(); 0]), quote!([]))
    } else {
        (quote!((#(#types,)*)), quote!((#(#names,)*)))
    };
    // The same tokens build the value as destructure it.
    let args_value = &args_pattern;
    let call_arguments = arguments.iter().map(|a| match a {
        Argument::Decoded { name, .. } => quote!(#name),
        Argument::Context => quote!(context),
    });
    let (output, returns_result) = output(function);
    let call = quote!(super::#ident(#(#call_arguments),*).await);
    let result = if returns_result {
        quote!(#call.map_err(::orcastra::task::TaskError::from))
    } else {
        quote!(::core::result::Result::Ok(#call))
    };
    let uses_context = arguments.iter().any(|a| matches!(a, Argument::Context));
    let context_binding = if uses_context {
        quote!(context)
    } else {
        quote!(_)
    };
    let task_doc = format!("The task definition of [`{ident}`](fn@super::{ident}).");
    let module_doc = format!("The definition of the task `{}`.", name.value());
    Ok(quote! {
        #function

        #[doc = #module_doc]
        #visibility mod #ident {
            #[allow(unused_imports)]
            use super::*;

            #[doc = #task_doc]
            #[derive(Clone, Copy, Debug, Default)]
            pub struct Task;

            impl ::orcastra::task::Task for Task {
                const NAME: &'static str = #name;
                type Args = #args_type;
                type Output = #output;

                // Every option may be given, leaving the defaults nothing to fill.
                #[allow(clippy::needless_update)]
                fn options(&self) -> ::orcastra::task::TaskOptions {
                    ::orcastra::task::TaskOptions {
                        #(#fields,)*
                        ..::core::default::Default::default()
                    }
                }

                fn run(
                    &self,
                    #args_pattern: Self::Args,
                    #context_binding: ::orcastra::task::TaskContext,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<Self::Output, ::orcastra::task::TaskError>,
                > + ::core::marker::Send {
                    async move { #result }
                }
            }

            /// The task's definition, to register with a worker.
            pub fn task() -> Task {
                Task
            }

            /// Submits the task with these arguments; returns once it is
            /// durably queued.
            pub async fn submit(
                orcastra: &::orcastra::Orcastra,
                #(#names: #types),*
            ) -> ::core::result::Result<::orcastra::TaskHandle<#output>, ::orcastra::Error> {
                orcastra.submit(Task, #args_value).await
            }
        }
    })
}
