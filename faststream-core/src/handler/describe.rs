//! What a handler's signature says about the messages it takes and returns, for the AsyncAPI
//! document: recorded by `#[subscriber]` and `#[publisher]` from the types as written.
//!
//! The generated code knows each concrete argument type, so it can ask, per type, the most
//! specific of three questions by autoref dispatch (a method found on `&&Probe<T>` wins over
//! one on `&Probe<T>`, which wins over one on `Probe<T>`):
//! 1. is it a payload whose JSON Schema is known (`Json<T>` with `T: schemars::JsonSchema`,
//!    text, bytes)? ([`TypedBody`])
//! 2. is it a payload of no known schema (`Json<T>` of any other `T`)? ([`UntypedBody`])
//! 3. otherwise it is not the payload (state, the broker, metadata).
//!
//! A trait with a bound cannot ask "does `T` implement `JsonSchema`" of a generic `T`; a
//! concrete type in generated code can, which is why this lives behind the macros.

use std::marker::PhantomData;

use bytes::Bytes;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::error::Rejection;
use crate::extract::json::Json;

/// How a payload is encoded: the message's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `text/plain`: UTF-8 text.
    Text,
    /// `application/octet-stream`: bytes.
    Bytes,
}

impl BodyKind {
    /// The content type the message carries.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyKind::Json => "application/json",
            BodyKind::Text => "text/plain",
            BodyKind::Bytes => "application/octet-stream",
        }
    }
}

/// Writes the schema of a type into a generator (definitions included), returning the schema
/// to use in place: a `$ref` for a named type.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// A message body as a handler's signature declares it.
#[derive(Debug, Clone, Copy)]
pub struct BodyDoc {
    /// The encoding.
    pub kind: BodyKind,
    /// The Rust type, for people and warnings.
    pub type_name: &'static str,
    /// Its JSON Schema; `None` for a `Json<T>` whose `T` has none.
    pub schema: Option<SchemaFn>,
}

impl BodyDoc {
    /// The body of type `T`, with `T`'s JSON Schema.
    pub fn json_of<T: JsonSchema>() -> Self {
        Self {
            kind: BodyKind::Json,
            type_name: std::any::type_name::<T>(),
            schema: Some(schema_of::<T>),
        }
    }
}

/// `T`'s schema in `generator`.
pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What the AsyncAPI document says of one handler, from its attribute and signature.
#[derive(Debug, Clone)]
pub struct HandlerDoc {
    /// `title = ".."` of the attribute.
    pub title: Option<&'static str>,
    /// `description = ".."` of the attribute; else the doc comment is the description.
    pub description: Option<&'static str>,
    /// The function's doc comment, its lines joined.
    pub docs: &'static str,
    /// `include_in_schema = false` leaves the subscriber out of the document.
    pub include_in_schema: bool,
    /// The message the handler takes: its first payload argument, or the `schema = T`
    /// override; `None` when no argument reads the payload.
    pub payload: Option<BodyDoc>,
    /// What the handler returns as a body, to a request and to its publishers; `None` when it
    /// returns nothing (`()`, `Result<(), E>`).
    pub output: Option<BodyDoc>,
}

impl HandlerDoc {
    /// What is known of a handler added in code: nothing of its types.
    pub(crate) fn unknown() -> Self {
        Self {
            title: None,
            description: None,
            docs: "",
            include_in_schema: true,
            payload: None,
            output: None,
        }
    }

    /// The first of `arguments` that reads the payload.
    pub fn first_payload(arguments: &[Option<BodyDoc>]) -> Option<BodyDoc> {
        arguments.iter().flatten().next().copied()
    }
}

/// A message body whose schema is known.
pub trait TypedBody {
    /// Its description.
    fn body() -> BodyDoc;
}

/// A JSON body whose type has no schema.
pub trait UntypedBody {
    /// Its description.
    fn body() -> BodyDoc;
}

impl<T: JsonSchema> TypedBody for Json<T> {
    fn body() -> BodyDoc {
        BodyDoc::json_of::<T>()
    }
}

impl<T> UntypedBody for Json<T> {
    fn body() -> BodyDoc {
        BodyDoc {
            kind: BodyKind::Json,
            type_name: std::any::type_name::<T>(),
            schema: None,
        }
    }
}

/// The schema of a body of bytes: a string of binary content.
struct BinaryString;

impl JsonSchema for BinaryString {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Binary".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({"type": "string", "format": "binary"})
    }
}

/// What a handler returns, as a body: `None` for `()`.
pub trait ReturnedBody {
    /// Its description, if it has a body.
    fn returned() -> Option<BodyDoc>;
}

impl ReturnedBody for () {
    fn returned() -> Option<BodyDoc> {
        None
    }
}

impl<E> ReturnedBody for Result<(), E> {
    fn returned() -> Option<BodyDoc> {
        None
    }
}

/// Text and bytes, taken or returned (alone or in a `Result`), with their schemas.
macro_rules! plain_bodies {
    ($($ty:ty => $kind:ident, $schema:ty;)*) => {
        $(
            impl TypedBody for $ty {
                fn body() -> BodyDoc {
                    BodyDoc {
                        kind: BodyKind::$kind,
                        type_name: std::any::type_name::<$ty>(),
                        schema: Some(schema_of::<$schema>),
                    }
                }
            }

            impl ReturnedBody for $ty {
                fn returned() -> Option<BodyDoc> {
                    Some(<$ty as TypedBody>::body())
                }
            }

            impl<E> ReturnedBody for Result<$ty, E> {
                fn returned() -> Option<BodyDoc> {
                    Some(<$ty as TypedBody>::body())
                }
            }
        )*
    };
}

plain_bodies! {
    String => Text, String;
    &'static str => Text, String;
    Vec<u8> => Bytes, BinaryString;
    Bytes => Bytes, BinaryString;
}

impl<T: JsonSchema> ReturnedBody for Json<T> {
    fn returned() -> Option<BodyDoc> {
        Some(BodyDoc::json_of::<T>())
    }
}

impl<T: JsonSchema, E> ReturnedBody for Result<Json<T>, E> {
    fn returned() -> Option<BodyDoc> {
        Some(BodyDoc::json_of::<T>())
    }
}

// `Option<T>` and `Result<T, Rejection>` arguments read the same payload as `T`.
impl<T: TypedBody> TypedBody for Option<T> {
    fn body() -> BodyDoc {
        T::body()
    }
}

impl<T: UntypedBody> UntypedBody for Option<T> {
    fn body() -> BodyDoc {
        T::body()
    }
}

impl<T: TypedBody> TypedBody for Result<T, Rejection> {
    fn body() -> BodyDoc {
        T::body()
    }
}

impl<T: UntypedBody> UntypedBody for Result<T, Rejection> {
    fn body() -> BodyDoc {
        T::body()
    }
}

/// A returned JSON body of no known schema.
pub trait UntypedReturn {
    /// Its description.
    fn returned() -> Option<BodyDoc>;
}

impl<T> UntypedReturn for Json<T> {
    fn returned() -> Option<BodyDoc> {
        Some(<Json<T> as UntypedBody>::body())
    }
}

impl<T, E> UntypedReturn for Result<Json<T>, E> {
    fn returned() -> Option<BodyDoc> {
        Some(<Json<T> as UntypedBody>::body())
    }
}

/// An argument type asked about by autoref dispatch: `(&&&ArgProbe::<T>::new()).body()`.
#[derive(Debug)]
pub struct ArgProbe<T>(PhantomData<fn() -> T>);

/// A return type asked about by autoref dispatch: `(&&&ReturnProbe::<T>::new()).body()`.
#[derive(Debug)]
pub struct ReturnProbe<T>(PhantomData<fn() -> T>);

impl<T> ArgProbe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> ReturnProbe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for ArgProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Default for ReturnProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// First choice: a body of known schema.
pub trait ViaTyped {
    /// The body.
    fn body(&self) -> Option<BodyDoc>;
}

/// Second choice: a JSON body of no known schema.
pub trait ViaUntyped {
    /// The body.
    fn body(&self) -> Option<BodyDoc>;
}

/// Last choice: no body (an argument that does not read the payload).
pub trait ViaNothing {
    /// No body.
    fn body(&self) -> Option<BodyDoc>;
}

impl<T: TypedBody> ViaTyped for &&ArgProbe<T> {
    fn body(&self) -> Option<BodyDoc> {
        Some(T::body())
    }
}

impl<T: UntypedBody> ViaUntyped for &ArgProbe<T> {
    fn body(&self) -> Option<BodyDoc> {
        Some(T::body())
    }
}

impl<T> ViaNothing for ArgProbe<T> {
    fn body(&self) -> Option<BodyDoc> {
        None
    }
}

impl<T: ReturnedBody> ViaTyped for &&ReturnProbe<T> {
    fn body(&self) -> Option<BodyDoc> {
        T::returned()
    }
}

impl<T: UntypedReturn> ViaUntyped for &ReturnProbe<T> {
    fn body(&self) -> Option<BodyDoc> {
        T::returned()
    }
}

impl<T> ViaNothing for ReturnProbe<T> {
    fn body(&self) -> Option<BodyDoc> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(schemars::JsonSchema, serde::Deserialize, serde::Serialize)]
    struct Order {
        id: u64,
    }

    #[derive(serde::Deserialize, serde::Serialize)]
    struct NoSchema;

    // What the macros generate, for each kind of type.
    macro_rules! arg {
        ($ty:ty) => {{
            #[allow(unused_imports)]
            use super::{ViaNothing as _, ViaTyped as _, ViaUntyped as _};
            (&&&ArgProbe::<$ty>::new()).body()
        }};
    }

    macro_rules! ret {
        ($ty:ty) => {{
            #[allow(unused_imports)]
            use super::{ViaNothing as _, ViaTyped as _, ViaUntyped as _};
            (&&&ReturnProbe::<$ty>::new()).body()
        }};
    }

    fn described(body: Option<BodyDoc>) -> Option<(BodyKind, bool)> {
        body.map(|body| (body.kind, body.schema.is_some()))
    }

    #[test]
    fn arguments_are_typed_untyped_or_not_the_payload() {
        assert_eq!(described(arg!(Json<Order>)), Some((BodyKind::Json, true)));
        assert_eq!(
            described(arg!(Option<Json<Order>>)),
            Some((BodyKind::Json, true))
        );
        assert_eq!(
            described(arg!(Result<Json<NoSchema>, Rejection>)),
            Some((BodyKind::Json, false))
        );
        assert_eq!(
            described(arg!(Json<NoSchema>)),
            Some((BodyKind::Json, false))
        );
        assert_eq!(described(arg!(String)), Some((BodyKind::Text, true)));
        assert_eq!(described(arg!(Bytes)), Some((BodyKind::Bytes, true)));
        assert_eq!(described(arg!(crate::KvMessage)), None);
        assert_eq!(described(arg!(crate::State<u32>)), None);
    }

    #[test]
    fn return_values_are_bodies_or_nothing() {
        assert_eq!(described(ret!(())), None);
        assert_eq!(described(ret!(anyhow::Result<()>)), None);
        assert_eq!(described(ret!(Json<Order>)), Some((BodyKind::Json, true)));
        assert_eq!(
            described(ret!(anyhow::Result<Json<Order>>)),
            Some((BodyKind::Json, true))
        );
        assert_eq!(
            described(ret!(Result<Json<NoSchema>, std::io::Error>)),
            Some((BodyKind::Json, false))
        );
        assert_eq!(described(ret!(&'static str)), Some((BodyKind::Text, true)));
        assert_eq!(described(ret!(Vec<u8>)), Some((BodyKind::Bytes, true)));
    }
}
