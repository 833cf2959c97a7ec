// ecert RA: keys made in the citizen's browser (WebCrypto, ECDSA P-256). The private key never
// leaves the browser except as a passphrase-protected file the citizen downloads: an encrypted
// PKCS#8 key at application time, a PKCS#12 bundle (key + certificate + chain) once issued.
// PKI.js builds the CSR (RFC 2986) and the PKCS#12 (RFC 7292, PBES2 with AES-256-CBC and
// PBKDF2-HMAC-SHA-256, HMAC-SHA-256 MAC) so that OpenSSL and OS keychains read them.
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";

const ALG = { name: "ECDSA", namedCurve: "P-256" };
const DB = "ecert-keys";
const STORE = "keys";
const ITERATIONS = 210000;

function crypto() {
  return pkijs.getCrypto(true);
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function pem(label, der) {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g).join("\n")}\n-----END ${label}-----\n`;
}

function unpem(text) {
  const out = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    const bin = atob(m[2].replace(/\s+/g, ""));
    out.push(Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer);
  }
  return out;
}

function db() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function put(id, value) {
  const d = await db();
  await new Promise((resolve, reject) => {
    const tx = d.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(value, id);
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
}

async function get(id) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const req = d.transaction(STORE, "readonly").objectStore(STORE).get(id);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Keys are stored under the SHA-256 of their SubjectPublicKeyInfo. */
async function spkiId(spkiDer) {
  return hex(await crypto().digest({ name: "SHA-256" }, spkiDer));
}

function download(name, type, data) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([data], { type }));
  a.download = name;
  // Named and out of sight while it is in the page (a link without text is an
  // accessibility fault, WCAG 2.4.4).
  a.textContent = name;
  a.className = "visually-hidden";
  document.body.appendChild(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}

async function shrouded(privateKey, password) {
  const pkcs8 = await crypto().exportKey("pkcs8", privateKey);
  const bag = new pkijs.PKCS8ShroudedKeyBag({
    parsedValue: new pkijs.PrivateKeyInfo({ schema: asn1js.fromBER(pkcs8).result }),
  });
  await bag.makeInternalValues({
    password: pvBuffer(password),
    contentEncryptionAlgorithm: { name: "AES-CBC", length: 256 },
    hmacHashAlgorithm: "SHA-256",
    iterationCount: ITERATIONS,
  });
  return bag;
}

function pvBuffer(text) {
  return new TextEncoder().encode(text).buffer;
}

/**
 * Makes a key pair and its CSR, keeps the key in this browser (see below) and offers the
 * encrypted key file; returns the CSR's DER and the SubjectPublicKeyInfo's SHA-256 (hex).
 */
async function newKeyAndCsr(passphrase) {
  // Extractable only for this function: the key is kept as a passphrase-encrypted PKCS#8 (for
  // the files the citizen saves) and as a non-extractable copy (for signing renewals), so
  // nothing in the browser profile hands out the private key in clear.
  const keys = await crypto().generateKey(ALG, true, ["sign", "verify"]);
  const csr = new pkijs.CertificationRequest();
  csr.subject.typesAndValues.push(
    new pkijs.AttributeTypeAndValue({
      type: "2.5.4.3",
      value: new asn1js.Utf8String({ value: "e-Cert applicant" }),
    }),
  );
  // RFC 2986 §4.1: attributes [0] is not OPTIONAL; an empty set is encoded.
  csr.attributes = [];
  await csr.subjectPublicKeyInfo.importKey(keys.publicKey);
  await csr.sign(keys.privateKey, "SHA-256");
  const der = csr.toSchema().toBER(false);
  const spki = await crypto().exportKey("spki", keys.publicKey);
  const encrypted = (await shrouded(keys.privateKey, passphrase)).toSchema().toBER(false);
  const pkcs8 = await crypto().exportKey("pkcs8", keys.privateKey);
  const signing = await crypto().importKey("pkcs8", pkcs8, ALG, false, ["sign"]);
  const id = await spkiId(spki);
  await put(id, { privateKey: signing, encryptedPkcs8: encrypted, created: Date.now() });
  download("e-cert-key.p8.pem", "application/x-pem-file", pem("ENCRYPTED PRIVATE KEY", encrypted));
  return { der, id };
}

/** Makes the key pair and the CSR; fills the form's CSR field. */
async function makeKey(status, csrField, passphrase) {
  if (!passphrase || passphrase.value.length < 8) {
    status.textContent = status.dataset.short;
    return;
  }
  const { der } = await newKeyAndCsr(passphrase.value);
  csrField.value = pem("CERTIFICATE REQUEST", der);
  status.textContent = status.dataset.done;
}

/**
 * Online re-key: a new key and its CSR, and the current key's signature (ECDSA P-256 with
 * SHA-256, r||s) over "ecert-rekey-v1\n<reference>\n<current serial>\n<new SPKI SHA-256>",
 * which the server checks against the current certificate (ra::rekey_message).
 */
async function rekey(form, passphrase, status) {
  if (!passphrase || passphrase.value.length < 8) {
    status.textContent = status.dataset.short;
    return;
  }
  const { certs, stored } = await chainAndKey(form);
  if (!stored) {
    status.textContent = status.dataset.nokey;
    return;
  }
  // ecert names serials by their 16 bytes in hex (SerialNumber::to_hex); DER may add a 00.
  const serial = hex(certs[0].serialNumber.valueBlock.valueHexView).replace(/^0+/, "").padStart(32, "0");
  const { der, id } = await newKeyAndCsr(passphrase.value);
  const reference = form.querySelector('input[name="reference"]').value.trim().toUpperCase();
  const message = new TextEncoder().encode(`ecert-rekey-v1\n${reference}\n${serial}\n${id}`);
  const proof = await crypto().sign({ name: "ECDSA", hash: "SHA-256" }, stored.privateKey, message);
  form.querySelector("#renew-csr").value = pem("CERTIFICATE REQUEST", der);
  form.querySelector("#rekey-proof").value = btoa(String.fromCharCode(...new Uint8Array(proof)));
  form.submit();
}

/** The issued chain (leaf first) and the key of the leaf held by this browser, if any. */
async function chainAndKey(form) {
  const body = new URLSearchParams(new FormData(form));
  body.set("format", "chain");
  const res = await fetch("/track/download", { method: "POST", body, credentials: "same-origin" });
  if (!res.ok) throw new Error(`download failed: ${res.status}`);
  const certs = unpem(await res.text()).map((der) => new pkijs.Certificate({ schema: asn1js.fromBER(der).result }));
  const stored = await get(await spkiId(certs[0].subjectPublicKeyInfo.toSchema().toBER(false)));
  return { certs, stored };
}

/** Online renewal: a CSR for the current certificate's key, signed with it (proof of possession). */
async function renew(form, status) {
  const { certs, stored } = await chainAndKey(form);
  if (!stored) {
    status.textContent = status.dataset.nokey;
    return;
  }
  const csr = new pkijs.CertificationRequest();
  csr.subject.typesAndValues.push(
    new pkijs.AttributeTypeAndValue({ type: "2.5.4.3", value: new asn1js.Utf8String({ value: "e-Cert renewal" }) }),
  );
  csr.attributes = [];
  csr.subjectPublicKeyInfo = certs[0].subjectPublicKeyInfo;
  await csr.sign(stored.privateKey, "SHA-256");
  form.querySelector("#renew-csr").value = pem("CERTIFICATE REQUEST", csr.toSchema().toBER(false));
  form.submit();
}

/** Builds the PKCS#12 from the key in this browser and the issued chain. */
async function makePkcs12(form, passphrase, status) {
  const { certs, stored } = await chainAndKey(form);
  if (!stored) {
    status.textContent = status.dataset.nokey;
    return;
  }
  const password = pvBuffer(passphrase.value);
  // The key goes into the PKCS#12 exactly as it was stored: encrypted under the key's
  // passphrase, which also protects the file. A wrong passphrase is found here.
  const keyBag = new pkijs.PKCS8ShroudedKeyBag({ schema: asn1js.fromBER(stored.encryptedPkcs8).result });
  try {
    await keyBag.parseInternalValues({ password });
  } catch (_) {
    status.textContent = status.dataset.wrong;
    return;
  }
  // localKeyId (PKCS#9) pairs the key with its certificate for Windows and macOS importers;
  // friendlyName names it in the keychain.
  const localKeyId = await crypto().digest({ name: "SHA-1" }, certs[0].toSchema().toBER(false));
  const bagAttributes = (name) => [
    new pkijs.Attribute({ type: "1.2.840.113549.1.9.21", values: [new asn1js.OctetString({ valueHex: localKeyId })] }),
    new pkijs.Attribute({ type: "1.2.840.113549.1.9.20", values: [new asn1js.BmpString({ value: name })] }),
  ];
  const name = `e-Cert ${form.querySelector('input[name="reference"]').value}`;
  const pfx = new pkijs.PFX({
    parsedValue: {
      integrityMode: 0,
      authenticatedSafe: new pkijs.AuthenticatedSafe({
        parsedValue: {
          safeContents: [
            {
              privacyMode: 0,
              value: new pkijs.SafeContents({
                safeBags: [
                  new pkijs.SafeBag({ bagId: "1.2.840.113549.1.12.10.1.2", bagValue: keyBag, bagAttributes: bagAttributes(name) }),
                ],
              }),
            },
            {
              privacyMode: 1,
              value: new pkijs.SafeContents({
                safeBags: certs.map(
                  (c, i) =>
                    new pkijs.SafeBag({
                      bagId: "1.2.840.113549.1.12.10.1.3",
                      bagValue: new pkijs.CertBag({ parsedValue: c }),
                      ...(i === 0 ? { bagAttributes: bagAttributes(name) } : {}),
                    }),
                ),
              }),
            },
          ],
        },
      }),
    },
  });
  await pfx.parsedValue.authenticatedSafe.makeInternalValues({
    safeContents: [
      {},
      {
        password,
        contentEncryptionAlgorithm: { name: "AES-CBC", length: 256 },
        hmacHashAlgorithm: "SHA-256",
        iterationCount: ITERATIONS,
      },
    ],
  });
  await pfx.makeInternalValues({
    password,
    iterations: ITERATIONS,
    pbkdf2HashAlgorithm: "SHA-256",
    hmacHashAlgorithm: "SHA-256",
  });
  const reference = form.querySelector('input[name="reference"]').value;
  download(`${reference}.p12`, "application/x-pkcs12", pfx.toSchema().toBER(false));
  status.textContent = status.dataset.done;
}

function wire() {
  const ren = document.getElementById("renew-browser");
  if (ren) {
    const status = document.getElementById("renew-status");
    ren.addEventListener("click", (e) => {
      e.preventDefault();
      renew(document.getElementById("renew-form"), status).catch((err) => {
        status.textContent = `${status.dataset.failed} ${err}`;
      });
    });
  }
  const re = document.getElementById("rekey-browser");
  if (re) {
    const status = document.getElementById("renew-status");
    re.addEventListener("click", (e) => {
      e.preventDefault();
      rekey(document.getElementById("renew-form"), document.getElementById("rekey-passphrase"), status).catch((err) => {
        status.textContent = `${status.dataset.failed} ${err}`;
      });
    });
  }
  const make = document.getElementById("make-key");
  if (make) {
    const status = document.getElementById("key-status");
    make.addEventListener("click", (e) => {
      e.preventDefault();
      makeKey(status, document.getElementById("csr"), document.getElementById("key-passphrase")).catch((err) => {
        status.textContent = `${status.dataset.failed} ${err}`;
      });
    });
  }
  const p12 = document.getElementById("download-p12");
  if (p12) {
    const status = document.getElementById("p12-status");
    p12.addEventListener("click", (e) => {
      e.preventDefault();
      makePkcs12(document.getElementById("p12-form"), document.getElementById("p12-passphrase"), status).catch((err) => {
        status.textContent = `${status.dataset.failed} ${err}`;
      });
    });
  }
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", wire);
} else {
  wire();
}
