// A registry client in Node.js: creates a registration, sets a TXT value, reads it back over
// DNS from the dns service, and follows the record feed until the change arrives.
// Usage: node client.mjs <registry host:port> <dns host:port> <protos dir>
// Prints one JSON object describing what it saw; exits non-zero on any failure.
import { Resolver } from "node:dns/promises";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [registryTarget, dnsServer, protosDir] = process.argv.slice(2);
const deadline = Date.now() + 20_000;

const definition = protoLoader.loadSync(
  [
    "acmezone/registry/v1/registration_service.proto",
    "acmezone/registry/v1/txt_record_service.proto",
    "acmezone/registry/v1/record_feed_service.proto",
  ],
  { includeDirs: [path.resolve(protosDir)], keepCase: false, longs: Number, enums: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).acmezone.registry.v1;
const credentials = grpc.credentials.createInsecure();
const registrations = new v1.RegistrationService(registryTarget, credentials);
const txtRecords = new v1.TxtRecordService(registryTarget, credentials);
const feed = new v1.RecordFeedService(registryTarget, credentials);

const call = (client, method, request, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  );

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  // Follow the feed from a snapshot, collecting every change.
  const seen = { snapshotRevision: null, changes: [] };
  const stream = feed.WatchRecords({ startRevision: 0 });
  stream.on("data", (message) => {
    if (message.snapshot && message.snapshot.last) seen.snapshotRevision = message.snapshot.revision;
    if (message.changes) seen.changes.push(...message.changes.changes);
  });
  stream.on("error", () => {}); // cancelled at the end
  while (seen.snapshotRevision === null) {
    if (Date.now() > deadline) throw new Error("no snapshot from the feed");
    await sleep(10);
  }

  const registration = await call(registrations, "CreateRegistration", {
    registration: { description: "created by the Node.js client" },
  });
  const value = "nodejs-client-value-0123456789abcdefghijklm".slice(0, 43);
  const auth = new grpc.Metadata();
  auth.set("x-api-user", registration.username);
  auth.set("x-api-key", registration.password);
  const record = await call(
    txtRecords,
    "AddTxtValue",
    { name: `${registration.name}/txtRecord`, value },
    auth,
  );

  // Read it back over DNS, as the ACME CA would.
  const resolver = new Resolver({ timeout: 1000, tries: 1 });
  const [host, port] = dnsServer.split(/:(?=\d+$)/);
  resolver.setServers([`${host}:${port}`]);
  let answer = [];
  while (!answer.flat().includes(value)) {
    if (Date.now() > deadline) throw new Error(`DNS never answered ${value}: ${JSON.stringify(answer)}`);
    try {
      answer = await resolver.resolveTxt(registration.fulldomain);
    } catch {
      answer = [];
    }
    if (!answer.flat().includes(value)) await sleep(20);
  }

  const fqdn = `${registration.fulldomain}.`;
  const wanted = (change) => change.recordSet.fqdn === fqdn && change.recordSet.txtValues.includes(value);
  while (!seen.changes.some(wanted)) {
    if (Date.now() > deadline) throw new Error("the feed never carried the change");
    await sleep(10);
  }
  stream.cancel();
  const change = seen.changes.find(wanted);
  console.log(
    JSON.stringify({
      name: registration.name,
      fulldomain: registration.fulldomain,
      passwordLength: registration.password.length,
      recordRevision: record.revision,
      dnsAnswer: answer,
      feedChange: { revision: change.revision, type: change.type, fqdn: change.recordSet.fqdn },
    }),
  );
}

main()
  .then(() => process.exit(0))
  .catch((error) => {
    console.error(error.stack || String(error));
    process.exit(1);
  });
