// node wechat-crypto + xml2js: time verify + decrypt + parse per push, on bench/run.py's cases.
const fs = require('fs');
const WXBizMsgCrypt = require('wechat-crypto');
const xml2js = require('xml2js');

// xml2js calls back synchronously (async: false is its default).
function parse(xml) {
  let out;
  xml2js.parseString(xml, { trim: true, explicitArray: false }, (err, result) => {
    if (err) throw err;
    out = result.xml;
  });
  return out;
}

const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const seconds = Number(process.argv[3] || 1.5);
const out = [];
for (const c of cases) {
  const crypto = new WXBizMsgCrypt(c.token, c.key, c.appid);
  const one = () => {
    const envelope = parse(c.body);
    if (crypto.getSignature(c.timestamp, c.nonce, envelope.Encrypt) !== c.msg_signature) {
      throw new Error('signature mismatch');
    }
    return parse(crypto.decrypt(envelope.Encrypt).message);
  };
  if (one().MsgType !== 'text') throw new Error('not a text message');
  let n = 0;
  const start = process.hrtime.bigint();
  while (Number(process.hrtime.bigint() - start) / 1e9 < seconds) {
    for (let i = 0; i < 50; i++) one();
    n += 50;
  }
  out.push({ size: c.size, ns_per_msg: Number(process.hrtime.bigint() - start) / n });
}
console.log(JSON.stringify(out));
