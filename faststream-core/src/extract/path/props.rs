//! Property tests of `Path<T>` against what writers control, the key: whatever the key, a
//! capture is a value or a rejection naming the key, never a panic; and the tokens a pattern's
//! `{name}` placeholders capture come back as the values written into the key, as a `u64`, a
//! `String`, a tuple or a struct.

use proptest::prelude::*;
use serde::Deserialize;

use super::captured;
use faststream_rules::{KeyPattern, PathParam};

/// Keeps the whole set within seconds in debug builds: each case is microseconds.
const CASES: u32 = 512;

/// A key token that is not a placeholder's: one to eight key characters.
fn literal() -> impl Strategy<Value = String> {
    "[A-Za-z0-9/=_-]{1,8}"
}

/// A pattern of the literal tokens `prefix` then the placeholders `names`, and the key written
/// from it with `values` in the placeholders' places.
fn key_for(prefix: &[String], names: &[&str], values: &[String]) -> (KeyPattern, String) {
    let mut pattern = prefix.to_vec();
    let mut key = prefix.to_vec();
    for (name, value) in names.iter().zip(values) {
        pattern.push(format!("{{{name}}}"));
        key.push(value.clone());
    }
    let pattern = pattern.join(".");
    match KeyPattern::parse(&pattern) {
        Ok(parsed) => (parsed, key.join(".")),
        // The strategies only make valid patterns: a failure here is a bug in this test.
        Err(error) => panic!("{pattern}: {error}"),
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct Ids {
    tenant: String,
    id: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_key_gives_a_value_or_a_rejection_naming_it(
        key in prop_oneof![any::<String>(), "[a-z0-9.]{0,16}", "[0-9]{1,25}(\\.[0-9]{1,25}){0,3}"],
        params in prop::collection::vec(("[a-z]{1,4}", 0..6usize), 0..4),
    ) {
        let params: Vec<PathParam> = params
            .into_iter()
            .map(|(name, token)| PathParam { name, token })
            .collect();
        // Every shape a handler may take, each built from the same key.
        let results = [
            captured::<u64>(&key, &params).err(),
            captured::<String>(&key, &params).err(),
            captured::<(String, u64)>(&key, &params).err(),
            captured::<Ids>(&key, &params).err(),
            captured::<Option<i8>>(&key, &params).err(),
            captured::<bool>(&key, &params).err(),
        ];
        for rejection in results.into_iter().flatten() {
            prop_assert!(!rejection.is_skip(), "{rejection}");
            prop_assert!(rejection.to_string().contains(&format!("key `{key}`")), "{rejection}");
        }
    }

    #[test]
    fn a_u64_captured_comes_back(
        prefix in prop::collection::vec(literal(), 0..4),
        id in any::<u64>(),
    ) {
        let (pattern, key) = key_for(&prefix, &["id"], &[id.to_string()]);
        prop_assert_eq!(captured::<u64>(&key, pattern.params()), Ok(id));
        // As text it is the token as written.
        prop_assert_eq!(captured::<String>(&key, pattern.params()), Ok(id.to_string()));
    }

    #[test]
    fn a_string_captured_comes_back_as_written(
        prefix in prop::collection::vec(literal(), 0..4),
        value in literal(),
    ) {
        let (pattern, key) = key_for(&prefix, &["name"], std::slice::from_ref(&value));
        prop_assert_eq!(captured::<String>(&key, pattern.params()), Ok(value.clone()));
        // A number only if the token is one.
        let number = captured::<u64>(&key, pattern.params()).ok();
        prop_assert_eq!(number, value.parse::<u64>().ok());
    }

    #[test]
    fn tuples_and_structs_come_back_in_pattern_order_or_by_name(
        prefix in prop::collection::vec(literal(), 0..3),
        tenant in literal(),
        id in any::<u64>(),
        flag in any::<bool>(),
    ) {
        let values = [tenant.clone(), id.to_string(), flag.to_string()];
        let (pattern, key) = key_for(&prefix, &["tenant", "id", "flag"], &values);
        prop_assert_eq!(
            captured::<(String, u64, bool)>(&key, pattern.params()),
            Ok((tenant.clone(), id, flag))
        );
        // By name, whatever the order of the placeholders; `flag` is not a field.
        prop_assert_eq!(
            captured::<Ids>(&key, pattern.params()),
            Ok(Ids { tenant: tenant.clone(), id })
        );
        let (swapped, key) = key_for(&prefix, &["id", "tenant"], &[id.to_string(), tenant.clone()]);
        prop_assert_eq!(captured::<Ids>(&key, swapped.params()), Ok(Ids { tenant, id }));
    }

    #[test]
    fn a_token_that_is_no_number_is_a_rejection_quoting_it(
        prefix in prop::collection::vec(literal(), 0..3),
        token in literal().prop_filter("not a u64", |token| token.parse::<u64>().is_err()),
    ) {
        let (pattern, key) = key_for(&prefix, &["id"], std::slice::from_ref(&token));
        let rejection = captured::<u64>(&key, pattern.params());
        let text = rejection.as_ref().map_err(|rejection| crate::error::chain(rejection));
        let quoted = format!("`{token}`");
        prop_assert!(text.as_ref().is_err_and(|text| text.contains(&quoted)), "{text:?}");
    }

    #[test]
    fn a_key_shorter_than_the_pattern_is_a_rejection_naming_the_placeholder(
        prefix in prop::collection::vec(literal(), 1..4),
    ) {
        // The placeholder's token is past the key's end: a key the server would not have sent
        // for this pattern, which a hand-made message may still carry.
        let (pattern, _) = key_for(&prefix, &["id"], &["1".to_owned()]);
        let key = prefix.join(".");
        let rejection = captured::<u64>(&key, pattern.params()).map_err(|error| error.to_string());
        prop_assert_eq!(rejection, Err(format!("key `{key}` has no token for `{{id}}`")));
    }
}
