//! The options of the AsyncAPI document, in every form: `title`, `description`,
//! `include_in_schema`, `schema`.

use super::*;
use crate::check::{DESCRIPTION_NOT_LITERAL, INCLUDE_NOT_BOOL, SCHEMA_NOT_TYPE, TITLE_NOT_LITERAL};
use quote::quote;

#[test]
fn doc_options_go_with_every_form() {
    for form in [
        quote!("orders.{id}", kv_watch = "b",),
        quote!("reports", obj_watch = true,),
        quote!("orders.{id}",),
    ] {
        let out = run(quote!(#form title = "Orders", description = "All of them",
            include_in_schema = false, schema = model::Order))
        .expect("expands");
        assert!(
            out.contains("title : :: core :: option :: Option :: Some (\"Orders\")"),
            "{out}"
        );
        assert!(
            out.contains("description : :: core :: option :: Option :: Some (\"All of them\")"),
            "{out}"
        );
        assert!(out.contains("include_in_schema : false"), "{out}");
        assert!(
            out.contains("BodyDoc :: json_of :: < model :: Order > ()"),
            "{out}"
        );
    }
}

#[test]
fn without_doc_options_the_types_are_asked() {
    let out = run(quote!("orders", kv_watch = "b")).expect("expands");
    assert!(out.contains("include_in_schema : true"), "{out}");
    assert!(out.contains("ArgProbe :: < u32 > :: new ()"), "{out}");
    assert!(
        out.contains("ReturnProbe :: < Result < () , E > > :: new ()"),
        "{out}"
    );
}

#[test]
fn bad_doc_options_are_each_reported() {
    let errors = run(quote!(
        "orders",
        title = "",
        description = 1,
        include_in_schema = "no",
        schema = 1 + 2
    ))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            TITLE_NOT_LITERAL,
            DESCRIPTION_NOT_LITERAL,
            INCLUDE_NOT_BOOL,
            SCHEMA_NOT_TYPE
        ]
    );
}
