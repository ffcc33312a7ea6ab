#!/usr/bin/env node
// Validates Teams Workflows messages with the official Adaptive Cards library (adaptivecards@3.0.6,
// pinned in package.json). Usage: node tools/validate-card.js FILE... (each file holds one message
// or a JSON array of messages). Exits 1 on any parse error, warning, or property the library does
// not understand; prints one line per problem. No DOM is needed: parsing/validation never renders.
"use strict";

const fs = require("fs");
const path = require("path");
// The package's "main" (lib/) is ESM with extension-less imports that Node cannot load; the
// dist/ UMD bundle is the same code, built for require().
const AC = require(path.join(__dirname, "node_modules", "adaptivecards", "dist", "adaptivecards.js"));

const MAX_BYTES = 28000; // Teams' message limit, measured like reconciler/cards.py does
const CONTENT_TYPE = "application/vnd.microsoft.card.adaptive";
// Host-specific extensions the library ignores by design.
const HOST_KEYS = new Set(["msteams"]);

function eventName(code) {
  return AC.ValidationEvent[code] || String(code);
}

// Properties present in `input` but lost or changed after parse → toJSON: the library did not
// understand them (a typo such as "colour", or a value outside the 1.4 schema).
function lostProperties(input, output, where, problems) {
  if (Array.isArray(input)) {
    if (!Array.isArray(output) || output.length !== input.length) {
      problems.push(`${where}: array not understood`);
      return;
    }
    input.forEach((v, i) => lostProperties(v, output[i], `${where}[${i}]`, problems));
    return;
  }
  if (input !== null && typeof input === "object") {
    if (output === null || typeof output !== "object") {
      problems.push(`${where}: object not understood`);
      return;
    }
    for (const key of Object.keys(input)) {
      if (where === "card" && HOST_KEYS.has(key)) continue;
      if (!(key in output)) problems.push(`${where}.${key}: property not understood by adaptivecards`);
      else lostProperties(input[key], output[key], `${where}.${key}`, problems);
    }
    return;
  }
  if (input !== output) problems.push(`${where}: value ${JSON.stringify(input)} became ${JSON.stringify(output)}`);
}

function validateCard(content) {
  const problems = [];
  if (content === null || typeof content !== "object") return ["content is not an object"];
  if (content.type !== "AdaptiveCard") problems.push(`content.type is ${JSON.stringify(content.type)}`);
  if (content.version !== "1.4") problems.push(`content.version is ${JSON.stringify(content.version)}, want "1.4"`);
  if (content.$schema !== "http://adaptivecards.io/schemas/adaptive-card.json") problems.push("content.$schema missing");

  const card = new AC.AdaptiveCard();
  const ctx = new AC.SerializationContext(AC.Versions.v1_4);
  card.parse(content, ctx);
  for (let i = 0; i < ctx.eventCount; i++) {
    const e = ctx.getEventAt(i);
    problems.push(`parse ${eventName(e.event)}: ${e.message}`);
  }
  for (const e of card.validateProperties().validationEvents) {
    problems.push(`validate ${eventName(e.event)}: ${e.message}`);
  }
  const roundTrip = card.toJSON(new AC.SerializationContext(AC.Versions.v1_4));
  lostProperties(content, roundTrip, "card", problems);
  return problems;
}

function validateMessage(message) {
  const problems = [];
  const bytes = Buffer.byteLength(JSON.stringify(message), "utf8");
  if (bytes >= MAX_BYTES) problems.push(`message is ${bytes} bytes, limit ${MAX_BYTES}`);
  if (message === null || typeof message !== "object" || message.type !== "message") {
    return [...problems, 'envelope: type must be "message"'];
  }
  if (!Array.isArray(message.attachments) || message.attachments.length === 0) {
    return [...problems, "envelope: attachments must be a non-empty array"];
  }
  message.attachments.forEach((a, i) => {
    if (a.contentType !== CONTENT_TYPE) problems.push(`attachments[${i}].contentType is ${JSON.stringify(a.contentType)}`);
    if (a.contentUrl !== null) problems.push(`attachments[${i}].contentUrl must be null`);
    for (const p of validateCard(a.content)) problems.push(`attachments[${i}]: ${p}`);
  });
  return problems;
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: node validate-card.js FILE...");
    return 2;
  }
  let failed = 0;
  for (const file of files) {
    let doc;
    try {
      doc = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (err) {
      console.log(`${file}: not JSON: ${err.message}`);
      failed++;
      continue;
    }
    const messages = Array.isArray(doc) ? doc : [doc];
    messages.forEach((m, i) => {
      const problems = validateMessage(m);
      const name = Array.isArray(doc) ? `${file}[${i}]` : file;
      if (problems.length) failed++;
      for (const p of problems) console.log(`${name}: ${p}`);
      if (!problems.length) console.log(`${name}: ok`);
    });
  }
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
