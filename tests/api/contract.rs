//! The generated schema must be a superset of the public contract
//! (tests/contract.graphql, a copy of shared/contract.graphql): same names,
//! same nullability. Parts owned by issues not built yet are listed in PENDING
//! and must be removed from it as they land.

use std::collections::BTreeMap;

use async_graphql_parser::types::{TypeKind, TypeSystemDefinition};

/// Contract types whose issue has not landed yet.
const PENDING_TYPES: &[&str] = &[];

/// Contract fields (`Type.field`) whose issue has not landed yet.
const PENDING_FIELDS: &[&str] = &[];

/// name -> (kind, member -> (type, args))
type Shape = BTreeMap<String, (String, BTreeMap<String, (String, BTreeMap<String, String>)>)>;

fn shape(sdl: &str) -> Shape {
    let doc = async_graphql_parser::parse_schema(sdl).expect("valid SDL");
    let mut out = Shape::new();
    for def in doc.definitions {
        let TypeSystemDefinition::Type(t) = def else {
            continue;
        };
        let t = t.node;
        let mut members = BTreeMap::new();
        let kind = match &t.kind {
            TypeKind::Scalar => "scalar",
            TypeKind::Object(o) => {
                for f in &o.fields {
                    let args = f
                        .node
                        .arguments
                        .iter()
                        .map(|a| (a.node.name.node.to_string(), a.node.ty.node.to_string()))
                        .collect();
                    members.insert(
                        f.node.name.node.to_string(),
                        (f.node.ty.node.to_string(), args),
                    );
                }
                "type"
            }
            TypeKind::InputObject(i) => {
                for f in &i.fields {
                    members.insert(
                        f.node.name.node.to_string(),
                        (f.node.ty.node.to_string(), BTreeMap::new()),
                    );
                }
                "input"
            }
            TypeKind::Enum(e) => {
                for v in &e.values {
                    members.insert(
                        v.node.value.node.to_string(),
                        (String::new(), BTreeMap::new()),
                    );
                }
                "enum"
            }
            TypeKind::Interface(_) => "interface",
            TypeKind::Union(_) => "union",
        };
        out.insert(t.name.node.to_string(), (kind.to_string(), members));
    }
    out
}

#[test]
fn schema_is_a_superset_of_the_contract() {
    let contract = shape(include_str!("../contract.graphql"));
    let ours = shape(&stockroom::graphql::schema::sdl());
    let mut problems = Vec::new();
    for (name, (kind, members)) in &contract {
        if PENDING_TYPES.contains(&name.as_str()) {
            continue;
        }
        let Some((our_kind, our_members)) = ours.get(name) else {
            problems.push(format!("missing {kind} {name}"));
            continue;
        };
        if our_kind != kind {
            problems.push(format!("{name}: {our_kind}, contract says {kind}"));
        }
        for (member, (ty, args)) in members {
            let path = format!("{name}.{member}");
            if PENDING_FIELDS.contains(&path.as_str()) {
                continue;
            }
            let Some((our_ty, our_args)) = our_members.get(member) else {
                problems.push(format!("missing {path}"));
                continue;
            };
            if our_ty != ty {
                problems.push(format!("{path}: {our_ty}, contract says {ty}"));
            }
            for (arg, arg_ty) in args {
                match our_args.get(arg) {
                    Some(t) if t == arg_ty => {}
                    Some(t) => problems.push(format!("{path}({arg}): {t}, contract says {arg_ty}")),
                    None => problems.push(format!("missing argument {path}({arg})")),
                }
            }
            for (arg, t) in our_args {
                if !args.contains_key(arg) && t.ends_with('!') {
                    problems.push(format!("{path}({arg}: {t}) is an extra required argument"));
                }
            }
        }
    }
    for pending in PENDING_TYPES {
        if ours.contains_key(*pending) {
            problems.push(format!(
                "{pending} exists now: remove it from PENDING_TYPES"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "schema vs contract:\n{}",
        problems.join("\n")
    );
}
