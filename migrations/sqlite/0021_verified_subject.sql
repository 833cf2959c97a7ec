-- Issue 12, defects 5 and 6: the certificate's countryName and localityName come from what the
-- counter verified, and an organisation is named by the register it was checked in.
-- org_register: 'NTR' (Business Registration number) or 'GOV' (a government bureau, department
-- or statutory body; organizationIdentifier GOVHK), as the applicant declared it and the
-- organisation check confirmed. identity_document: the document a matched identity check saw
-- ('HKID': an HKID card, issued by HK). org_locality: the locality of the organisation's
-- registered address, typed by the clerk at the organisation check (server applications).
ALTER TABLE applications ADD COLUMN org_register TEXT;
ALTER TABLE applications ADD COLUMN identity_document TEXT;
ALTER TABLE applications ADD COLUMN org_locality TEXT;
-- Before this, every organisation was a Business Registration holder and every identity check
-- an HKID card.
UPDATE applications SET org_register = 'NTR' WHERE org_id IS NOT NULL;
UPDATE applications SET identity_document = 'HKID' WHERE identity_by IS NOT NULL;
