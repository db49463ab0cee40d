"""Record and file JSON: InvenioRDM's, and Zenodo's legacy serializer (zenodo-rdm
legacy/serializers).
"""

from __future__ import annotations

import copy
from urllib.parse import quote

from werkzeug.wrappers import Request

from .model import Record, Snapshot, StoredFile


# Zenodo's resource type vocabulary titles, for the ones tests and StepUp use; an id not
# listed here is stored and served without a title (the sandbox does not check vocabularies).
RESOURCE_TYPE_TITLES = {
    "dataset": "Dataset",
    "software": "Software",
    "publication": "Publication",
    "publication-article": "Journal article",
    "publication-report": "Report",
    "publication-preprint": "Preprint",
    "image": "Image",
    "image-figure": "Figure",
    "poster": "Poster",
    "presentation": "Presentation",
    "video": "Video/Audio",
    "lesson": "Lesson",
    "workflow": "Workflow",
    "model": "Model",
    "other": "Other",
}


# RDM relation type id -> the legacy serializer's camelCase name (zenodo-rdm common.py).
LEGACY_RELATIONS = {
    r.lower(): r
    for r in (
        "isCitedBy cites isSupplementTo isSupplementedBy isContinuedBy continues "
        "isDescribedBy describes hasMetadata isMetadataFor hasVersion isVersionOf "
        "isNewVersionOf isPreviousVersionOf isPartOf hasPart isPublishedIn "
        "isReferencedBy references isDocumentedBy documents isCompiledBy compiles "
        "isVariantFormOf isOriginalFormOf isIdenticalTo isReviewedBy reviews "
        "isDerivedFrom isSourceOf isRequiredBy requires isObsoletedBy obsoletes "
        "isAlternateIdentifier"
    ).split()
}


class RecordSerializer:
    """Mixed into InvenioSandbox: record and file JSON."""

    def _doi(self, pid: str) -> str:
        return f"{self.settings.doi_prefix}/zenodo.{pid}"

    def _file_entry(self, f: StoredFile, files_url: str) -> dict:
        entry = {"id": f.id, "key": f.key, "metadata": f.metadata or {},
                 "access": {"hidden": False},
                 "links": {"self": f"{files_url}/{quote(f.key)}",
                           "content": f"{files_url}/{quote(f.key)}/content"}}
        if f.committed:
            entry.update(checksum=f"md5:{f.md5}", size=f.size, mimetype=f.mimetype,
                         ext=f.key.rsplit(".", 1)[-1].lower() if "." in f.key else None,
                         storage_class="L")
        return entry

    def _record_json(self, request: Request, record: Record, snap: Snapshot,
                     is_draft: bool, errors: list | None = None) -> dict:
        base = self._base(request)
        api = f"{base}/api/records/{record.id}"
        parent = record.parent
        latest = self._latest_published(parent)
        published = [r for r in parent.versions if r.published is not None]
        links = {
            "latest": f"{api}/versions/latest",
            "latest_html": f"{base}/records/{record.id}/latest",
            "versions": f"{api}/versions",
            "access_links": f"{api}/access/links",
            "parent": f"{base}/api/records/{parent.id}",
            "parent_html": f"{base}/records/{parent.id}",
            "draft": f"{api}/draft",
            "record": api,
            "record_html": f"{base}/records/{record.id}",
        }
        if is_draft:
            files_url = f"{api}/draft/files"
            links.update(self=f"{api}/draft", self_html=f"{base}/uploads/{record.id}",
                         publish=f"{api}/draft/actions/publish",
                         reserve_doi=f"{api}/draft/pids/doi", files=files_url,
                         archive=f"{api}/draft/files-archive")
        else:
            files_url = f"{api}/files"
            links.update(self=api, self_html=f"{base}/records/{record.id}",
                         files=files_url, archive=f"{api}/files-archive")
        pids = {}
        if record.doi:
            pids = {"doi": {"identifier": record.doi, "provider": "datacite",
                            "client": "datacite"},
                    "oai": {"identifier": f"oai:zenodo.org:{record.id}",
                            "provider": "oai"}}
            links.update(doi=f"https://doi.org/{record.doi}",
                         self_doi=f"https://doi.org/{record.doi}")
        parent_json = {"id": parent.id,
                       "access": {"owned_by": {"user": parent.owner},
                                  "settings": {"allow_user_requests": False,
                                               "allow_guest_requests": False,
                                               "accept_conditions_text": None,
                                               "secret_link_expiration": 0}},
                       "communities": {}, "pids": {}}
        if parent.doi:
            parent_json["pids"] = {"doi": {"identifier": parent.doi,
                                           "provider": "datacite", "client": "datacite"}}
            links["parent_doi"] = f"https://doi.org/{parent.doi}"
        metadata = copy.deepcopy(snap.metadata)
        for creator in metadata.get("creators", []):
            person = creator.get("person_or_org", {})
            if person.get("type") == "personal":
                given = person.get("given_name")
                person["name"] = (f"{person['family_name']}, {given}" if given
                                  else person["family_name"])
        rtype = metadata.get("resource_type", {}).get("id")
        if rtype in RESOURCE_TYPE_TITLES:
            metadata["resource_type"]["title"] = {"en": RESOURCE_TYPE_TITLES[rtype]}
        entries = {f.key: self._file_entry(f, files_url) for f in snap.files.values()}
        files = {"enabled": snap.files_enabled, "order": list(snap.order),
                 "count": len(entries),
                 "total_bytes": sum(f.size or 0 for f in snap.files.values()
                                    if f.committed),
                 "entries": entries}
        if snap.default_preview:
            files["default_preview"] = snap.default_preview
        is_published = record.published is not None
        if not is_draft or is_published:
            status = "published"
        else:
            status = "new_version_draft" if record.index > 1 else "draft"
        embargoed = (snap.access.get("embargo") or {}).get("active")
        access = {**snap.access, "status": "embargoed" if embargoed else
                  "open" if snap.access["files"] == "public" else "restricted"}
        access.setdefault("embargo", {"active": False, "reason": None})
        data = {
            "id": record.id,
            "created": record.created,
            "updated": snap.updated,
            "links": links,
            "revision_id": snap.revision_id,
            "parent": parent_json,
            "versions": {"index": record.index,
                         "is_latest": latest is record,
                         "is_latest_draft": parent.versions[-1] is record},
            "is_published": is_published,
            "is_draft": is_draft,
            "pids": pids,
            "metadata": metadata,
            "custom_fields": copy.deepcopy(snap.custom_fields),
            "access": access,
            "files": files,
            "media_files": {"enabled": False, "order": [], "count": 0,
                            "total_bytes": 0, "entries": {}},
            "status": status,
            "deletion_status": {"is_deleted": False, "status": "P"},
        }
        if not is_draft:
            data["stats"] = {"this_version": {"views": 0, "downloads": 0},
                             "all_versions": {"views": 0, "downloads": 0}}
            data["versions"]["count"] = len(published)
        if errors:
            data["errors"] = errors
        return data

    @staticmethod
    def _legacy(r: dict) -> dict:
        md = r.get("metadata", {})
        legacy_md: dict = {}
        for name in ("title", "publication_date", "description", "version"):
            if name in md:
                legacy_md[name] = md[name]
        doi = r.get("pids", {}).get("doi", {}).get("identifier")
        if doi:
            legacy_md["doi"] = doi
        files_access = r["access"]["files"]
        legacy_md["access_right"] = "open" if files_access == "public" else "restricted"
        creators = []
        for c in md.get("creators", []):
            person = c.get("person_or_org", {})
            out = {"name": person.get("name"),
                   "affiliation": (c.get("affiliations") or [{}])[0].get("name")}
            for ident in person.get("identifiers", []):
                if ident.get("scheme") in ("orcid", "gnd"):
                    out[ident["scheme"]] = ident.get("identifier")
            creators.append(out)
        if "creators" in md:
            legacy_md["creators"] = creators
        keywords = [s["subject"] for s in md.get("subjects", []) if s.get("subject")
                    and not s.get("id")]
        if keywords:
            legacy_md["keywords"] = keywords
        related = []
        for rel in md.get("related_identifiers", []):
            item = {"identifier": rel.get("identifier"), "scheme": rel.get("scheme")}
            relation = LEGACY_RELATIONS.get((rel.get("relation_type") or {}).get("id"))
            if relation:
                item["relation"] = relation
            if rel.get("resource_type"):
                item["resource_type"] = rel["resource_type"].get("id")
            related.append(item)
        if related:
            legacy_md["related_identifiers"] = related
        if md.get("rights"):
            # zenodo-rdm maps the first right through rdm_to_legacy; ids are passed here.
            legacy_md["license"] = {"id": md["rights"][0].get("id")}
        if md.get("languages"):
            legacy_md["language"] = md["languages"][0].get("id")
        rtype = md.get("resource_type", {})
        if rtype.get("id"):
            legacy_rt = {"type": rtype["id"].split("-")[0]}
            if "-" in rtype["id"]:
                legacy_rt["subtype"] = rtype["id"].split("-")[-1]
            if rtype.get("title", {}).get("en"):
                legacy_rt["title"] = rtype["title"]["en"]
            legacy_md["resource_type"] = legacy_rt
        legacy_md["relations"] = {"version": [{
            "index": r["versions"]["index"] - 1,
            "is_last": r["versions"]["is_latest"],
            "parent": {"pid_type": "recid", "pid_value": r["parent"]["id"]},
        }]}
        files_url = r["links"].get("files")
        files = [{"id": f["id"], "key": f["key"], "size": f.get("size"),
                  "checksum": f.get("checksum"),
                  "links": {"self": f"{files_url}/{quote(key)}/content"}}
                 for key, f in r["files"]["entries"].items()]
        out = {
            "created": r["created"],
            "modified": r["updated"],
            "updated": r["updated"],
            "id": int(r["id"]),
            "recid": r["id"],
            "conceptrecid": r["parent"]["id"],
            "metadata": legacy_md,
            "title": md.get("title", ""),
            "links": r["links"],
            "revision": r["revision_id"],
            "files": files,
            "swh": {},
            "owners": [{"id": r["parent"]["access"]["owned_by"]["user"]}],
            "status": "draft" if r["is_draft"] else "published",
            "state": ("unsubmitted" if not r["is_published"]
                      else "inprogress" if r["is_draft"] else "done"),
            "submitted": r["is_published"],
        }
        if doi:
            out["doi"] = doi
            out["doi_url"] = r["links"].get("doi")
        concept = r["parent"].get("pids", {}).get("doi", {}).get("identifier")
        if concept:
            out["conceptdoi"] = concept
        return out  # the legacy schema has no "errors": a draft's problems are not shown

    def _file_json(self, request: Request, record: Record, snap: Snapshot,
                   f: StoredFile, is_draft: bool = True) -> dict:
        api = f"{self._base(request)}/api/records/{record.id}"
        url = f"{api}/draft/files/{quote(f.key)}" if is_draft else \
            f"{api}/files/{quote(f.key)}"
        data = {"key": f.key, "created": f.created, "updated": f.updated,
                "status": "completed" if f.committed else "pending",
                "metadata": f.metadata, "access": {"hidden": False},
                "transfer": {"type": "L"},
                "links": {"self": url, "content": f"{url}/content"}}
        if is_draft:
            data["links"]["commit"] = f"{url}/commit"
        if f.committed:
            data.update(checksum=f"md5:{f.md5}", mimetype=f.mimetype, size=f.size,
                        file_id=f.file_id, version_id=f.version_id,
                        bucket_id=snap.bucket_id, storage_class="L")
        return data

    def _files_json(self, request: Request, record: Record, snap: Snapshot,
                    files: list, is_draft: bool = True) -> dict:
        api = f"{self._base(request)}/api/records/{record.id}"
        return {"enabled": snap.files_enabled, "default_preview": snap.default_preview,
                "order": list(snap.order),
                "entries": [self._file_json(request, record, snap, f, is_draft)
                            for f in files],
                "links": {"self": f"{api}/draft/files" if is_draft else f"{api}/files"}}
