//! `Path<T>`: the key tokens captured by the pattern's `{name}` placeholders.

use std::any::type_name;

use serde::de::value::{Error as ValueError, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use faststream_rules::PathParam;

use super::{FromMessage, Message};
use crate::context::SubscriberContext;
use crate::error::Rejection;

/// The key tokens captured by the `{name}` placeholders of the subscriber's pattern.
///
/// One placeholder deserializes into any type that reads from text (`String`, integers, `bool`,
/// enums of unit variants, ...); several into a tuple (in pattern order) or a struct (by
/// name). A token that does not parse is logged with the reason and counted as a rejection
/// (`outcome="rejected"`); the handler is not called.
/// Taking `Path` in a subscriber whose pattern has no placeholder is an error at start-up.
///
/// ```
/// use faststream_core::{subscriber, Path};
///
/// #[subscriber("users.{id}", kv_watch = "accounts")]
/// async fn one(Path(id): Path<u64>) {}
///
/// #[subscriber("tenants.{tenant}.users.{id}", kv_watch = "accounts")]
/// async fn tuple(Path((tenant, id)): Path<(String, u64)>) {}
///
/// #[derive(serde::Deserialize)]
/// struct Ids {
///     tenant: String,
///     id: u64,
/// }
///
/// #[subscriber("tenants.{tenant}.users.{id}", kv_watch = "accounts")]
/// async fn by_name(Path(ids): Path<Ids>) {}
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned> FromMessage for Path<T> {
    fn from_message(message: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        captured(message.key(), context.pattern.params()).map(Path)
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        if context.pattern.params().is_empty() {
            Err(format!(
                "`Path<{}>` needs `{{name}}` placeholders, and the pattern `{}` has none",
                type_name::<T>(),
                context.pattern()
            ))
        } else {
            Ok(())
        }
    }
}

/// The tokens of `key` that the placeholders `params` capture, deserialized into `T`.
fn captured<T: DeserializeOwned>(key: &str, params: &[PathParam]) -> Result<T, Rejection> {
    let mut values = Vec::with_capacity(params.len());
    for param in params {
        let Some(token) = key.split('.').nth(param.token) else {
            return Err(Rejection::new(format_args!(
                "key `{key}` has no token for `{{{}}}`",
                param.name
            )));
        };
        values.push((param.name.as_str(), token));
    }
    T::deserialize(Params(&values)).map_err(|error| {
        Rejection::caused_by(
            format_args!(
                "path parameters of key `{key}` do not fit `{}`",
                type_name::<T>()
            ),
            error,
        )
    })
}

/// All the captured `(name, token)` pairs: a struct (by name), a tuple (in order), or, when
/// there is one, a single value.
struct Params<'a>(&'a [(&'a str, &'a str)]);

impl<'a> Params<'a> {
    fn single(&self) -> Result<Token<'a>, ValueError> {
        match self.0 {
            [(_, value)] => Ok(Token(value)),
            many => Err(de::Error::custom(format_args!(
                "{} placeholders cannot fill a single value; take a tuple or a struct",
                many.len()
            ))),
        }
    }
}

macro_rules! single_value {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.single()?.$method(visitor)
        }
    )*};
}

impl<'de, 'a> de::Deserializer<'de> for Params<'a> {
    type Error = ValueError;

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let pairs = self.0.iter().map(|(name, value)| (*name, Token(value)));
        visitor.visit_map(MapDeserializer::new(pairs))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(SeqDeserializer::new(
            self.0.iter().map(|(_, value)| Token(value)),
        ))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }

    single_value! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.single()?.deserialize_unit(visitor)
    }
}

/// One key token: parsed into numbers and booleans on request, text otherwise.
struct Token<'a>(&'a str);

macro_rules! parse_token {
    ($($method:ident => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            match self.0.parse() {
                Ok(value) => visitor.$visit(value),
                Err(error) => Err(de::Error::custom(format_args!("`{}`: {error}", self.0))),
            }
        }
    )*};
}

impl<'de, 'a> de::Deserializer<'de> for Token<'a> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str(self.0)
    }

    parse_token! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8,
        deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32,
        deserialize_i64 => visit_i64,
        deserialize_i128 => visit_i128,
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64,
        deserialize_u128 => visit_u128,
        deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
        deserialize_char => visit_char,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    forward_to_deserialize_any! {
        str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl<'de, 'a> IntoDeserializer<'de, ValueError> for Token<'a> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn parse<T: DeserializeOwned>(values: &[(&str, &str)]) -> Result<T, String> {
        T::deserialize(Params(values)).map_err(|error| error.to_string())
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Ids {
        id: u32,
        tenant: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Admin,
        Guest,
    }

    #[test]
    fn single_values() {
        assert_eq!(parse::<u64>(&[("id", "42")]), Ok(42));
        assert_eq!(parse::<String>(&[("id", "007")]), Ok("007".to_owned()));
        assert_eq!(parse::<bool>(&[("on", "true")]), Ok(true));
        assert_eq!(parse::<Kind>(&[("kind", "guest")]), Ok(Kind::Guest));
        assert_eq!(parse::<Option<u8>>(&[("n", "7")]), Ok(Some(7)));
        let error = parse::<u8>(&[("id", "x1")]).unwrap_err();
        assert!(error.contains("`x1`: invalid digit"), "{error}");
        assert!(parse::<Kind>(&[("kind", "root")]).is_err());
        let _ = Kind::Admin;
    }

    #[test]
    fn several_values() {
        let values = [("tenant", "acme"), ("id", "9")];
        assert_eq!(parse::<(String, u32)>(&values), Ok(("acme".into(), 9)));
        assert_eq!(
            parse::<Ids>(&values),
            Ok(Ids {
                id: 9,
                tenant: "acme".into()
            })
        );
        let error = parse::<u32>(&values).unwrap_err();
        assert!(
            error.contains("2 placeholders cannot fill a single value"),
            "{error}"
        );
    }
}
