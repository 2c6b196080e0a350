// Drives the simulator's HTTP API with an existing Mailpit client library, unchanged: the npm
// package `mailpit-api` (npm). Usage:
//   node mailpit-client.mjs <base URL> <subject> [--delete]
import { MailpitClient } from "mailpit-api";
import assert from "node:assert/strict";

const [base, subject, del] = process.argv.slice(2);
const mailpit = new MailpitClient(base);

const info = await mailpit.getInfo();
assert.ok(info.Version.startsWith("dkim-relay"), JSON.stringify(info));
assert.ok(info.Messages >= 1, "info counts the message");

const list = await mailpit.listMessages();
assert.ok(list.messages_count >= 1 && list.messages.length >= 1, JSON.stringify(list));

// waitForMessage: search, then getMessageSummary (GET /api/v1/message/{ID}).
const msg = await mailpit.waitForMessage({ query: `subject:"${subject}" tag:dmarc-pass` }, { timeout: 10000 });
assert.equal(msg.Subject, subject);
assert.equal(msg.From.Address, "app@example.org");
assert.ok(msg.Tags.includes("dkim-pass") && msg.Tags.includes("dmarc-pass"), msg.Tags.join(","));
assert.ok(msg.Text.includes("Hello"), msg.Text);

const headers = await mailpit.getMessageHeaders(msg.ID);
assert.ok(headers["Dkim-Signature"].some((s) => s.includes("d=amazonses.com")), "SES's signature");
assert.match(headers["Message-Id"][0], /@email\.amazonses\.com>$/);

const source = await mailpit.getMessageSource(msg.ID);
assert.ok(source.includes("Feedback-ID: "), "raw source is the delivered form");

const failing = await mailpit.searchMessages({ query: "tag:dmarc-fail" });
assert.equal(failing.messages_count, 0);

await mailpit.setReadStatus({ IDs: [msg.ID], Read: false });
const unread = await mailpit.searchMessages({ query: "is:unread" });
assert.ok(unread.messages.some((m) => m.ID === msg.ID));

if (del === "--delete") {
  await mailpit.deleteMessages({ IDs: [msg.ID] });
  const after = await mailpit.searchMessages({ query: `subject:"${subject}"` });
  assert.equal(after.messages_count, 0);
}
console.log(`mailpit-api client OK against ${base}: ${msg.ID} "${msg.Subject}" [${msg.Tags.join(", ")}]`);
