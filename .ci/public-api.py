#!/usr/bin/env python3
"""Prints the public API of a crate from its rustdoc JSON, one sorted line per item.

Usage: public-api.py TARGET/doc/CRATE.json > api/CRATE.txt

Used by .ci/public-api (which makes the JSON and diffs the output against the checked-in
api/*.txt). It is a small stand-in for `cargo public-api`, which needs a nightly toolchain
that the project's machines do not have: this reads the JSON that the stable rustdoc writes
under RUSTC_BOOTSTRAP=1. Every item reachable from the crate root by a public path is listed
under that path (a re-exported item under each path that reaches it), with its signature;
fields, variants and inherent methods under their type; trait impls as `impl Trait for Type`
(auto traits and blanket impls left out: they follow from the rest, and would flood the
list). `#[non_exhaustive]` is shown, since adding or removing it is a semver change.
"""

import json
import sys

# The rustdoc JSON layout this script reads. A newer toolchain may change it: the script then
# refuses to run instead of printing a quietly different list.
FORMAT_VERSIONS = {57}


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    if doc["format_version"] not in FORMAT_VERSIONS:
        sys.exit(
            f"public-api.py: rustdoc JSON format {doc['format_version']} is not one of "
            f"{sorted(FORMAT_VERSIONS)}; check the script against the new format and add it"
        )
    api = Api(doc)
    root = api.index[str(doc["root"])]
    # First walk: the public path of every item (the shortest, then the first in sort order),
    # so that a signature names `bootvault::Store`, not the private `bootvault::store::Store`.
    api.module(root, root["name"], set())
    api.lines = []
    api.module(root, root["name"], set())
    for line in sorted(set(api.lines)):
        print(line)


class Api:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc["paths"]
        self.lines = []
        self.public = {}

    def item(self, id_):
        return self.index.get(str(id_))

    # ---- the walk from the crate root ---------------------------------------------------

    def module(self, item, path, stack):
        if item["id"] in stack:
            return
        stack = stack | {item["id"]}
        self.lines.append(f"pub mod {path}")
        for child_id in item["inner"]["module"]["items"]:
            child = self.item(child_id)
            if child is not None:
                self.member(child, path, stack)

    def member(self, item, prefix, stack):
        kind, inner = next(iter(item["inner"].items()))
        if kind == "use":
            target = self.item(inner["id"]) if inner["id"] is not None else None
            if inner["is_glob"]:
                if target is not None and "module" in target["inner"]:
                    for child_id in target["inner"]["module"]["items"]:
                        child = self.item(child_id)
                        if child is not None:
                            self.member(child, prefix, stack)
                else:
                    self.lines.append(f"pub use {prefix}::{inner['source']}::*")
            elif target is not None:
                self.named(target, f"{prefix}::{inner['name']}", stack)
            else:
                # A re-export of another crate's item: its path is the API.
                self.lines.append(f"pub use {prefix}::{inner['name']} = {inner['source']}")
            return
        if item.get("name") is None:
            return
        self.named(item, f"{prefix}::{item['name']}", stack)

    def named(self, item, path, stack):
        kind, inner = next(iter(item["inner"].items()))
        known = self.public.get(item["id"])
        if known is None or (len(known), known) > (len(path), path):
            self.public[item["id"]] = path
        attrs = self.attrs(item)
        if kind == "module":
            self.module(item, path, stack)
        elif kind == "struct":
            self.struct(item, inner, path, attrs)
        elif kind == "enum":
            self.enum(inner, path, attrs)
        elif kind == "union":
            self.lines.append(f"{attrs}pub union {path}{self.generics(inner['generics'])}")
            self.fields(inner["fields"], path)
            self.impls(inner["impls"], path)
        elif kind == "trait":
            self.trait(item, inner, path, attrs)
        elif kind == "function":
            self.lines.append(f"{attrs}{self.function(inner, path)}")
        elif kind == "constant":
            self.lines.append(f"pub const {path}: {self.ty(inner['type'])}")
        elif kind == "static":
            mut = "mut " if inner["is_mutable"] else ""
            self.lines.append(f"pub static {mut}{path}: {self.ty(inner['type'])}")
        elif kind == "type_alias":
            generics = self.generics(inner["generics"])
            self.lines.append(f"pub type {path}{generics} = {self.ty(inner['type'])}")
        elif kind in ("macro", "proc_macro"):
            self.lines.append(f"pub macro {path}!")
        else:
            self.lines.append(f"pub {kind} {path}")

    def attrs(self, item):
        for a in item.get("attrs", []):
            if a == "non_exhaustive" or (isinstance(a, dict) and "non_exhaustive" in a):
                return "#[non_exhaustive] "
            if isinstance(a, str) and "non_exhaustive" in a:
                return "#[non_exhaustive] "
        return ""

    def struct(self, item, inner, path, attrs):
        generics = self.generics(inner["generics"])
        kind = inner["kind"]
        if kind == "unit":
            self.lines.append(f"{attrs}pub struct {path}{generics};")
        elif "tuple" in kind:
            fields = [self.tuple_field(f) for f in kind["tuple"]]
            self.lines.append(f"{attrs}pub struct {path}{generics}({', '.join(fields)})")
        else:
            plain = kind["plain"]
            hidden = " { .. }" if plain["has_stripped_fields"] else ""
            self.lines.append(f"{attrs}pub struct {path}{generics}{hidden}")
            self.fields(plain["fields"], path)
        self.impls(inner["impls"], path)

    def tuple_field(self, field_id):
        if field_id is None:
            return "_"
        field = self.item(field_id)
        return f"pub {self.ty(field['inner']['struct_field'])}"

    def fields(self, ids, path):
        for field_id in ids:
            field = self.item(field_id)
            self.lines.append(f"pub {path}::{field['name']}: {self.ty(field['inner']['struct_field'])}")

    def enum(self, inner, path, attrs):
        hidden = " { .. }" if inner["has_stripped_variants"] else ""
        self.lines.append(f"{attrs}pub enum {path}{self.generics(inner['generics'])}{hidden}")
        for variant_id in inner["variants"]:
            variant = self.item(variant_id)
            v = variant["inner"]["variant"]
            vattrs = self.attrs(variant)
            kind = v["kind"]
            name = f"{path}::{variant['name']}"
            if kind == "plain":
                disc = f" = {v['discriminant']['expr']}" if v.get("discriminant") else ""
                self.lines.append(f"{vattrs}pub {name}{disc}")
            elif "tuple" in kind:
                fields = [self.tuple_field(f).removeprefix("pub ") for f in kind["tuple"]]
                self.lines.append(f"{vattrs}pub {name}({', '.join(fields)})")
            else:
                st = kind["struct"]
                fields = []
                for field_id in st["fields"]:
                    field = self.item(field_id)
                    fields.append(f"{field['name']}: {self.ty(field['inner']['struct_field'])}")
                if st["has_stripped_fields"]:
                    fields.append("..")
                self.lines.append(f"{vattrs}pub {name} {{ {', '.join(fields)} }}")
        self.impls(inner["impls"], path)

    def trait(self, item, inner, path, attrs):
        unsafe = "unsafe " if inner["is_unsafe"] else ""
        bounds = self.bounds(inner["bounds"])
        bounds = f": {bounds}" if bounds else ""
        generics = self.generics(inner["generics"])
        self.lines.append(f"{attrs}pub {unsafe}trait {path}{generics}{bounds}")
        for member_id in inner["items"]:
            self.assoc(self.item(member_id), path)
        self.impls(inner["implementations"], path, for_trait=True)

    def impls(self, ids, path, for_trait=False):
        for impl_id in ids:
            impl = self.item(impl_id)
            if impl is None:
                continue
            inner = impl["inner"]["impl"]
            if inner["is_synthetic"] or inner["blanket_impl"] is not None:
                continue
            generics = self.generics(inner["generics"])
            if inner["trait"] is None:
                for member_id in inner["items"]:
                    member = self.item(member_id)
                    if member is not None and member["visibility"] == "public":
                        self.assoc(member, path)
                continue
            neg = "!" if inner["is_negative"] else ""
            unsafe = "unsafe " if inner["is_unsafe"] else ""
            trait = self.path(inner["trait"])
            target = self.ty(inner["for"])
            self.lines.append(f"{unsafe}impl{generics} {neg}{trait} for {target}")

    def assoc(self, member, path):
        kind, inner = next(iter(member["inner"].items()))
        name = f"{path}::{member['name']}"
        if kind == "function":
            self.lines.append(f"{self.attrs(member)}{self.function(inner, name)}")
        elif kind == "assoc_const":
            self.lines.append(f"pub const {name}: {self.ty(inner['type'])}")
        elif kind == "assoc_type":
            bounds = self.bounds(inner["bounds"])
            value = f" = {self.ty(inner['type'])}" if inner.get("type") else ""
            self.lines.append(f"pub type {name}{': ' + bounds if bounds else ''}{value}")
        else:
            self.lines.append(f"pub {kind} {name}")

    # ---- signatures -----------------------------------------------------------------------

    def function(self, inner, path):
        header = inner["header"]
        quals = "".join(
            q
            for q, on in (
                ("const ", header["is_const"]),
                ("async ", header["is_async"]),
                ("unsafe ", header["is_unsafe"]),
            )
            if on
        )
        sig = inner["sig"]
        args = []
        for name, t in sig["inputs"]:
            if name == "self":
                args.append(self.self_arg(t))
            else:
                args.append(f"{name}: {self.ty(t)}")
        out = f" -> {self.ty(sig['output'])}" if sig["output"] is not None else ""
        generics = self.generics(inner["generics"])
        where = self.where_clause(inner["generics"])
        return f"pub {quals}fn {path}{generics}({', '.join(args)}){out}{where}"

    def self_arg(self, t):
        if t == {"generic": "Self"}:
            return "self"
        if "borrowed_ref" in t and t["borrowed_ref"]["type"] == {"generic": "Self"}:
            r = t["borrowed_ref"]
            lt = f"{r['lifetime']} " if r["lifetime"] else ""
            return f"&{lt}{'mut ' if r['is_mutable'] else ''}self"
        return f"self: {self.ty(t)}"

    def generics(self, g):
        params = []
        for p in g["params"]:
            kind = p["kind"]
            if "lifetime" in kind:
                outlives = " + ".join(kind["lifetime"]["outlives"])
                params.append(f"{p['name']}: {outlives}" if outlives else p["name"])
            elif "type" in kind:
                if kind["type"]["is_synthetic"]:
                    continue  # an `impl Trait` argument: shown in the argument list
                bounds = self.bounds(kind["type"]["bounds"])
                default = kind["type"]["default"]
                text = f"{p['name']}: {bounds}" if bounds else p["name"]
                params.append(text + (f" = {self.ty(default)}" if default else ""))
            elif "const" in kind:
                params.append(f"const {p['name']}: {self.ty(kind['const']['type'])}")
        return f"<{', '.join(params)}>" if params else ""

    def where_clause(self, g):
        preds = []
        for w in g["where_predicates"]:
            if "bound_predicate" in w:
                b = w["bound_predicate"]
                preds.append(f"{self.ty(b['type'])}: {self.bounds(b['bounds'])}")
            elif "lifetime_predicate" in w:
                b = w["lifetime_predicate"]
                preds.append(f"{b['lifetime']}: {' + '.join(b['outlives'])}")
            elif "eq_predicate" in w:
                b = w["eq_predicate"]
                preds.append(f"{self.ty(b['lhs'])} = {self.term(b['rhs'])}")
        return f" where {', '.join(preds)}" if preds else ""

    def bounds(self, bounds):
        out = []
        for b in bounds:
            if "trait_bound" in b:
                tb = b["trait_bound"]
                mod = {"none": "", "maybe": "?", "maybe_const": "~const "}.get(tb["modifier"], "")
                hrtb = ""
                if tb["generic_params"]:
                    hrtb = "for<" + ", ".join(p["name"] for p in tb["generic_params"]) + "> "
                out.append(f"{hrtb}{mod}{self.path(tb['trait'])}")
            elif "outlives" in b:
                out.append(b["outlives"])
            elif "use" in b:
                out.append("use<" + ", ".join(str(u) for u in b["use"]) + ">")
        return " + ".join(out)

    def path(self, p):
        """A path to a type or trait, with its args: this crate's items by their public path,
        other crates' by their defining path (so that a private alias or a moved import does
        not change the line)."""
        name = self.public.get(p["id"])
        if name is None:
            known = self.paths.get(str(p["id"]))
            name = "::".join(known["path"]) if known else p["path"]
        return name + self.args(p.get("args"))

    def args(self, a):
        if not a:
            return ""
        if "angle_bracketed" in a:
            ab = a["angle_bracketed"]
            parts = []
            for arg in ab["args"]:
                if arg == "infer":
                    parts.append("_")
                elif "lifetime" in arg:
                    parts.append(arg["lifetime"])
                elif "type" in arg:
                    parts.append(self.ty(arg["type"]))
                elif "const" in arg:
                    parts.append(arg["const"]["expr"])
            for c in ab["constraints"]:
                binding = c["binding"]
                if "equality" in binding:
                    parts.append(f"{c['name']} = {self.term(binding['equality'])}")
                else:
                    parts.append(f"{c['name']}: {self.bounds(binding['constraint'])}")
            return f"<{', '.join(parts)}>" if parts else ""
        if "parenthesized" in a:
            p = a["parenthesized"]
            out = f" -> {self.ty(p['output'])}" if p["output"] else ""
            return f"({', '.join(self.ty(t) for t in p['inputs'])}){out}"
        return "(..)"

    def term(self, t):
        if "type" in t:
            return self.ty(t["type"])
        return t["constant"]["expr"]

    def ty(self, t):
        if t is None:
            return "()"
        kind, v = next(iter(t.items())) if isinstance(t, dict) else (t, None)
        if kind == "resolved_path":
            return self.path(v)
        if kind in ("generic", "primitive"):
            return v
        if kind == "tuple":
            return f"({', '.join(self.ty(x) for x in v)}{',' if len(v) == 1 else ''})"
        if kind == "slice":
            return f"[{self.ty(v)}]"
        if kind == "array":
            return f"[{self.ty(v['type'])}; {v['len']}]"
        if kind == "borrowed_ref":
            lt = f"{v['lifetime']} " if v["lifetime"] else ""
            return f"&{lt}{'mut ' if v['is_mutable'] else ''}{self.ty(v['type'])}"
        if kind == "raw_pointer":
            return f"*{'mut' if v['is_mutable'] else 'const'} {self.ty(v['type'])}"
        if kind == "impl_trait":
            return f"impl {self.bounds(v)}"
        if kind == "dyn_trait":
            parts = []
            for pt in v["traits"]:
                hrtb = ""
                if pt["generic_params"]:
                    hrtb = "for<" + ", ".join(p["name"] for p in pt["generic_params"]) + "> "
                parts.append(hrtb + self.path(pt["trait"]))
            if v["lifetime"]:
                parts.append(v["lifetime"])
            return f"dyn {' + '.join(parts)}"
        if kind == "qualified_path":
            trait = self.path(v["trait"]) if v["trait"] else None
            self_ty = self.ty(v["self_type"])
            base = f"<{self_ty} as {trait}>" if trait else self_ty
            return f"{base}::{v['name']}{self.args(v.get('args'))}"
        if kind == "function_pointer":
            sig = v["sig"]
            args = ", ".join(self.ty(x[1]) for x in sig["inputs"])
            out = f" -> {self.ty(sig['output'])}" if sig["output"] else ""
            return f"fn({args}){out}"
        if kind == "infer":
            return "_"
        if kind == "pat":
            return self.ty(v["type"])
        return f"<{kind}>"


if __name__ == "__main__":
    main()
