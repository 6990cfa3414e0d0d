#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets (scripts/fuzz.sh), from captures.

    fuzz-corpus.py TARGET OUTDIR CAPTURE...

TARGET is `parser`, `pcap` or `pcapng`. Writes one file per seed into OUTDIR,
named by the SHA-1 of its contents (as libFuzzer names its own), so equal
seeds are written once.

- parser: every packet of every capture whose link type the packet parser
  decodes, prefixed with the 4-byte header of the `parser` target
  (TestSupport's `ParserFuzzer`: link-type index, flags, bytes on the wire
  beyond the capture), twice: delivered under its own key, and redirected to
  the harness's sockets, twice, through the batch path (flags 0x0B).
- pcap / pcapng: each capture file of that format whole (up to MAX_WHOLE
  bytes) and cut into small files of WINDOW packets each (the file header, or
  every non-packet pcapng block so far, then the window's packet records):
  short inputs run fast and mutate well.

Packets per capture are capped at MAX_PACKETS (the tcpdump corpus has long
captures of one protocol; their first packets carry its structure).
"""
import hashlib
import os
import struct
import sys

# The order of TestSupport's `ParserFuzzer.linkTypes` (byte 0 of a parser
# input is an index into it).
LINK_TYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]
WINDOW = 4
MAX_WHOLE = 256 * 1024
MAX_PACKETS = 256
PCAPNG_MAGIC = 0x0A0D0D0A


def pcap_packets(data):
    """(linktype, caplen-bytes, wirelen) for each record, and the raw records."""
    if len(data) < 24:
        return None
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        return None
    link = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    header, records, o = data[:24], [], 24
    while o + 16 <= len(data) and len(records) < MAX_PACKETS:
        caplen, wire = struct.unpack_from(e + "II", data, o + 8)
        if o + 16 + caplen > len(data):
            break
        records.append((link, data[o + 16:o + 16 + caplen], wire, data[o:o + 16 + caplen]))
        o += 16 + caplen
    return header, records


def pcapng_blocks(data):
    """(type, raw block, packet or None) in file order."""
    blocks, o, e, links = [], 0, "<", []
    while o + 12 <= len(data):
        btype = struct.unpack_from("<I", data, o)[0]
        if btype == PCAPNG_MAGIC:
            if o + 12 > len(data):
                break
            e = "<" if struct.unpack_from("<I", data, o + 8)[0] == 0x1A2B3C4D else ">"
            links = []
        else:
            btype = struct.unpack_from(e + "I", data, o)[0]
        length = struct.unpack_from(e + "I", data, o + 4)[0]
        if length < 12 or o + length > len(data):
            break
        raw, body = data[o:o + length], data[o + 8:o + length - 4]
        packet = None
        if btype == 1 and len(body) >= 8:
            links.append(struct.unpack_from(e + "H", body, 0)[0])
        elif btype in (6, 2) and len(body) >= 20:
            iface = struct.unpack_from(e + ("I" if btype == 6 else "H"), body, 0)[0]
            caplen, wire = struct.unpack_from(e + "II", body, 12)
            if iface < len(links):
                packet = (links[iface], body[20:20 + caplen], wire)
        elif btype == 3 and len(body) >= 4 and links:
            wire = struct.unpack_from(e + "I", body, 0)[0]
            packet = (links[0], body[4:4 + min(wire, len(body) - 4)], wire)
        blocks.append((btype, raw, packet))
        o += length
    return blocks


def write(outdir, seed):
    name = hashlib.sha1(seed).hexdigest()
    path = os.path.join(outdir, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(seed)


def parser_seeds(packets):
    for link, frame, wire in packets:
        if link not in LINK_TYPES:
            continue
        extra = min(max(wire - len(frame), 0), 0xFFFF)
        for flags in (0x00, 0x0B):
            yield bytes([LINK_TYPES.index(link), flags, extra >> 8, extra & 0xFF]) + frame


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("parser", "pcap", "pcapng"):
        sys.exit(__doc__)
    target, outdir, captures = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(outdir, exist_ok=True)
    for path in captures:
        with open(path, "rb") as f:
            data = f.read()
        is_pcapng = len(data) >= 4 and struct.unpack_from("<I", data)[0] == PCAPNG_MAGIC
        if is_pcapng:
            blocks = pcapng_blocks(data)
            packets = [b[2] for b in blocks if b[2] is not None][:MAX_PACKETS]
        else:
            parsed = pcap_packets(data)
            if parsed is None:
                continue
            header, records = parsed
            packets = [r[:3] for r in records]
        if target == "parser":
            for seed in parser_seeds(packets):
                write(outdir, seed)
            continue
        if (target == "pcapng") != is_pcapng:
            continue
        if len(data) <= MAX_WHOLE:
            write(outdir, data)
        if is_pcapng:
            prefix, window, count = b"", [], 0
            for btype, raw, packet in blocks:
                if packet is None:
                    prefix += raw
                    continue
                window.append(raw)
                count += 1
                if len(window) == WINDOW or count == MAX_PACKETS:
                    write(outdir, prefix + b"".join(window))
                    window = []
                if count == MAX_PACKETS:
                    break
            if window:
                write(outdir, prefix + b"".join(window))
        else:
            for i in range(0, len(records), WINDOW):
                write(outdir, header + b"".join(r[3] for r in records[i:i + WINDOW]))


if __name__ == "__main__":
    main()
