#!/usr/bin/env python3
"""Generate chargetail's sample PaperCut files for "Harbour Works", a
coworking space in Melbourne (AUD), over the week 2026-11-16 .. 2026-11-22.

Deterministic (fixed seed, no clock): running it again rewrites the same
bytes. Run from anywhere: `python3 sample-data/generate.py`.

What the files exercise (see README.md beside this script):
- transactions/tx-2026-11-DD.log: transaction-file profile, tab-separated
  with a header; debits written negative; a refund (positive amount); a
  non-ASCII document name; quoted fields holding a tab, a comma and doubled
  quotes; on 2026-11-19 no transaction_id (nor balance) column and two
  identical records; on 2026-11-20 one bad line (amount "abc").
- print-logs/printlog_2026_11_20.log: print-log profile (date and 12-hour
  time in two fields, no header, cost positive).
- print-logger/papercut-print-log-2026-11-20.csv: print-logger-csv profile
  (banner, header, CRLF line ends as written on Windows, no cost).
- job-details/jobs-2026-11-20.txt: job-details profile (name=value pairs).
"""

import os
import random
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
DOMAIN = "harbourworks.com.au"
SERVER = "pc-harbour"

# (username, shared account or None for a personal account, client machine)
MEMBERS = [
    ("maya.chen", "Acme Design", "maya-mbp"),
    ("arjun.patel", "Acme Design", "arjun-xps"),
    ("liam.oconnor", "Studio Nine", "liam-imac"),
    ("sofia.rossi", "Studio Nine", "sofia-mbp"),
    ("noah.kim", "Studio Nine", "noah-surface"),
    ("tom.nguyen", "Koala Labs", "tom-thinkpad"),
    ("jack.wilson", "Koala Labs", "jack-mbp"),
    ("zoe.martin", None, "zoe-air"),
    ("priya.sharma", None, "priya-pc"),
    ("chloe.dubois", None, "chloe-mbp"),
]

DEVICES = {
    "print": ["hw-l1-mfd", "hw-l2-colour", "hw-l2-mono"],
    "copy": ["hw-l1-mfd"],
    "scan": ["hw-l1-mfd"],
    "fax": ["hw-l1-mfd"],
}

DOCUMENTS = [
    "Q4 board pack.pdf",
    "Invoice 2026-118.pdf",
    "Lease agreement v3.docx",
    "Pitch deck - Harbour.pptx",
    "Floor plan L2.pdf",
    "Client brief.docx",
    "Timesheet week 47.xlsx",
    "Wireframes, round 2.pdf",
    "Boarding pass.pdf",
    "Menu – Café Sète.pdf",
    "Tax return 2025-26.pdf",
]

# Prices in AUD per page side.
MONO = Decimal("0.10")
COLOUR = Decimal("0.50")
SCAN = Decimal("0.00")
FAX = Decimal("1.00")

DAYS = [(16, 34), (17, 38), (18, 31), (19, 27), (20, 36), (21, 8), (22, 4)]

TX_HEADER = [
    "time", "transaction_id", "user", "account", "amount", "balance",
    "job_type", "pages", "color_pages", "copies", "duplex", "device",
    "document", "comment",
]
# 2026-11-19 was exported without the id and balance columns.
TX_HEADER_NO_ID = [
    "time", "user", "account", "amount", "job_type", "pages",
    "color_pages", "copies", "duplex", "device", "document",
]


def tsv_field(value):
    """Quote as RFC 4180 when the value holds a tab or a quote."""
    if "\t" in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_field(value):
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def money(d):
    return f"{d:.2f}"


def make_jobs(rng, day, count):
    """`count` jobs on 2026-11-`day`, in time order."""
    seconds = sorted(rng.sample(range(8 * 3600, 19 * 3600), count))
    jobs = []
    for s in seconds:
        user, shared, client = rng.choice(MEMBERS)
        kind = rng.choices(["print", "copy", "scan", "fax"], [70, 15, 10, 5])[0]
        pages = rng.choice([1, 1, 2, 3, 4, 6, 8, 12, 20])
        copies = rng.choice([1, 1, 1, 2])
        duplex = kind in ("print", "copy") and pages > 1 and rng.random() < 0.5
        device = rng.choice(DEVICES[kind])
        colour = 0
        if kind in ("print", "copy") and device != "hw-l2-mono" and rng.random() < 0.4:
            colour = rng.randint(1, pages)
        if kind == "scan":
            cost = SCAN
            copies = 1
        elif kind == "fax":
            cost = FAX * pages
            copies = 1
            colour = 0
        else:
            cost = (MONO * (pages - colour) + COLOUR * colour) * copies
        jobs.append({
            "time": f"2026-11-{day:02d} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}",
            "secs": s,
            "user": f"{user}@{DOMAIN}",
            "account": shared if shared else f"{user}@{DOMAIN}",
            "client": client,
            "kind": kind,
            "pages": pages,
            "colour": colour,
            "copies": copies,
            "duplex": duplex,
            "device": device,
            "document": rng.choice(DOCUMENTS) if kind == "print" else
            {"copy": "Copy", "scan": "Scan to email", "fax": "Fax to 03 9555 0142"}[kind],
            "cost": cost,
        })
    return jobs


def write(path, lines, newline="\n", encoding="utf-8"):
    full = os.path.join(HERE, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding=encoding, newline="") as f:
        for line in lines:
            f.write(line + newline)


def transactions(rng):
    balances = {}
    txno = 4200
    summary = {}
    for day, count in DAYS:
        jobs = make_jobs(rng, day, count)
        with_id = day != 19
        header = TX_HEADER if with_id else TX_HEADER_NO_ID
        lines = ["\t".join(header)]
        charges = errors = 0
        # Special records go on print jobs at fixed places, so the data is
        # stable and each special case reads naturally.
        prints = [i for i, j in enumerate(jobs) if j["kind"] == "print"]
        for i, j in enumerate(jobs):
            amount = -j["cost"]
            comment = ""
            job_type = j["kind"].upper()
            document = j["document"]
            if day == 17 and i == prints[3]:
                document = 'Budget\tQ4 "final".xlsx'  # a tab and quotes: quoted
            if day == 18 and i == prints[2]:
                document = "Résumé – Zoë.pdf"  # non-ASCII, Zoë's own job
                j["user"] = j["account"] = f"zoe.martin@{DOMAIN}"
            if day == 18 and i == prints[15]:
                # A refund arrives as a later record, written positive.
                job_type = "ADJUSTMENT"
                amount = Decimal("2.40")
                document = ""
                comment = "Refund: paper jam on hw-l2-colour, 2026-11-18"
            account = j["account"]
            balances[account] = balances.get(account, Decimal("0")) + amount
            values = {
                "time": j["time"],
                "transaction_id": f"tx-{txno:06d}",
                "user": j["user"],
                "account": account,
                "amount": money(amount),
                "balance": money(balances[account]),
                "job_type": job_type,
                "pages": str(j["pages"]),
                "color_pages": str(j["colour"]),
                "copies": str(j["copies"]),
                "duplex": "TRUE" if j["duplex"] else "FALSE",
                "device": j["device"],
                "document": document,
                "comment": comment,
            }
            if job_type == "ADJUSTMENT":
                for k in ("pages", "color_pages", "copies", "duplex", "device"):
                    values[k] = ""
            txno += 1
            if day == 20 and i == 17:
                values["amount"] = "abc"  # the deliberate dead letter
                errors += 1
            else:
                charges += 1
            line = "\t".join(tsv_field(values[h]) for h in header)
            lines.append(line)
            if day == 19 and i == 10:
                # The same job logged twice, byte for byte: two charges, told
                # apart by their ordinal.
                lines.append(line)
                charges += 1
        write(f"transactions/tx-2026-11-{day:02d}.log", lines)
        summary[f"transactions/tx-2026-11-{day:02d}.log"] = (charges, errors)
    return summary


def twelve_hour(secs):
    h, m, s = secs // 3600, secs // 60 % 60, secs % 60
    suffix = "AM" if h < 12 else "PM"
    h12 = h % 12 or 12
    return f"{h12}:{m:02d}:{s:02d} {suffix}"


def print_log(rng):
    jobs = [j for j in make_jobs(rng, 20, 30) if j["kind"] == "print"]
    lines = []
    for j in jobs:
        lines.append("\t".join([
            "2026-11-20",
            twelve_hour(j["secs"]),
            SERVER,
            j["device"],
            j["user"],
            j["account"],
            j["client"],
            j["document"].replace("\t", " "),
            str(j["pages"]),
            str(j["colour"]),
            str(j["copies"]),
            money(j["cost"]),
            "DUPLEX" if j["duplex"] else "NOT DUPLEX",
            "NOT GRAYSCALE" if j["colour"] else "GRAYSCALE",
        ]))
    write("print-logs/printlog_2026_11_20.log", lines)
    return {"print-logs/printlog_2026_11_20.log": (len(lines), 0)}


def print_logger(rng):
    jobs = [j for j in make_jobs(rng, 20, 24) if j["kind"] == "print"]
    lines = [PRINT_LOGGER_BANNER, PRINT_LOGGER_HEADER]
    for j in jobs:
        # As the Print Logger writes a row: every value, then a comma (15
        # fields under the 14-column header).
        lines.append(",".join(csv_field(v) for v in [
            j["time"],
            j["user"],
            str(j["pages"]),
            str(j["copies"]),
            f"\\\\{SERVER}\\{j['device']}",
            j["document"],
            j["client"],
            rng.choice(["A4", "A4", "A4", "A3", "Letter"]),
            rng.choice(["PCL6", "PostScript"]),
            "",  # Height and Width: empty in the exports seen in the field
            "",
            "DUPLEX" if j["duplex"] else "NOT DUPLEX",
            "NOT GRAYSCALE" if j["colour"] else "GRAYSCALE",
            f"{rng.randint(40, 4000)}kb",
        ]) + ",")
    # Written on Windows: CRLF line ends.
    write("print-logger/papercut-print-log-2026-11-20.csv", lines, newline="\r\n")
    return {"print-logger/papercut-print-log-2026-11-20.csv": (len(lines) - 2, 0)}


PRINT_LOGGER_BANNER = "PaperCut Print Logger - http://www.papercut.com/"
PRINT_LOGGER_HEADER = ("Time,User,Pages,Copies,Printer,Document Name,Client,"
                       "Paper Size,Language,Height,Width,Duplex,Grayscale,Size")
# The header as a Spanish-language server writes it (same column order).
PRINT_LOGGER_HEADER_ES = ("Hora,Usuario,Páginas,Copias,Impresora,Nombre Documento,"
                          "Cliente,Formato Papel,Idioma,Altura,Anchura,"
                          "Frente/reverso,Escala de grises,Formato")


def print_logger_row(t, user, pages, copies, printer, doc, client, duplex, grey, kb):
    return ",".join(csv_field(v) for v in [
        t, user, str(pages), str(copies), printer, doc, client, "A4", "PCL6",
        "", "", "DUPLEX" if duplex else "NOT DUPLEX",
        "GRAYSCALE" if grey else "NOT GRAYSCALE", f"{kb}kb",
    ]) + ","


def print_logger_spanish():
    """A Spanish server: translated header, ` : ` banner, Windows-1252."""
    rows = [
        ("2026-11-21 08:05:11", f"lucía.garcía@{DOMAIN}", 2, 1, "HW-L1-MFD",
         "Presupuesto año 2027.xlsx", "LUCIA-PC", False, True, 19),
        ("2026-11-21 08:17:42", f"josé.martínez@{DOMAIN}", 12, 2, "HW-L2-COLOR",
         "Diseño, versión final.pdf", "JOSE-MAC", True, False, 1203),
        ("2026-11-21 09:30:00", f"lucía.garcía@{DOMAIN}", 1, 1, "HW-L1-MFD",
         "Carta a \"Señor\" Núñez.docx", "LUCIA-PC", False, True, 52),
    ]
    lines = ["PaperCut Print Logger : http://www.papercut.com/", PRINT_LOGGER_HEADER_ES]
    lines += [print_logger_row(*r) for r in rows]
    path = "print-logger/es/papercut-print-log-2026-11-21.csv"
    write(path, lines, newline="\r\n", encoding="cp1252")
    return {path: (len(rows), 0)}


def print_logger_cyrillic():
    """A Russian-language office: Cyrillic names in Windows-1251 (the
    server's ANSI code page), the `.biz` banner."""
    rows = [
        ("2026-11-21 10:02:13", f"ivanov@{DOMAIN}", 3, 1, "Бухгалтерия-МФУ",
         "Отчёт за ноябрь.docx", "BUH-01", False, True, 88),
        ("2026-11-21 10:15:40", f"petrova@{DOMAIN}", 1, 2, "Бухгалтерия-МФУ",
         "Счёт-фактура №17.pdf", "BUH-02", False, True, 21),
        ("2026-11-21 11:47:05", f"smirnov@{DOMAIN}", 6, 1, "Приёмная",
         "Договор аренды, редакция 2.pdf", "SEC-01", True, False, 640),
    ]
    lines = ["PaperCut Print Logger - http://www.papercut.biz/", PRINT_LOGGER_HEADER]
    lines += [print_logger_row(*r) for r in rows]
    path = "print-logger/ru/papercut-print-log-2026-11-21.csv"
    write(path, lines, newline="\r\n", encoding="cp1251")
    return {path: (len(rows), 0)}


def print_logger_utf16():
    """UTF-16LE with a byte order mark, CRLF: CJK names whose code units
    hold 0x0A bytes (上 is U+4E0A)."""
    rows = [
        ("2026-11-21 13:00:00", f"yamada@{DOMAIN}", 2, 1, "受付プリンター",
         "上期報告.pdf", "UKETSUKE-PC", False, True, 120),
        ("2026-11-21 13:20:30", f"zhang@{DOMAIN}", 4, 1, "上海办公室",
         "合同，最终版.docx", "SH-PC", True, True, 310),
    ]
    lines = ["\ufeffPaperCut Print Logger - http://www.papercut.com/", PRINT_LOGGER_HEADER]
    lines += [print_logger_row(*r) for r in rows]
    path = "print-logger/utf16/papercut-print-log-2026-11-21.csv"
    write(path, lines, newline="\r\n", encoding="utf-16-le")
    return {path: (len(rows), 0)}


def job_details_manual():
    """The shapes PaperCut's manual prints for `server-command process-job`
    and `api.processJob`: the minimum (no time), a pair quoted whole because
    it holds a comma, doubled quotes in a value, and the same for the user
    and shared account (who pays)."""
    lines = [
        "user=maya.chen@harbourworks.com.au,server=pc-harbour,printer=Front Desk",
        "user=maya.chen@harbourworks.com.au,server=pc-harbour,"
        "\"printer=Library, rear\",cost=0.40,total-pages=4",
        "user=liam.oconnor@harbourworks.com.au,server=pc-harbour,"
        "printer=\"\"Harbour View\"\" Colour,cost=2.50,total-pages=5,"
        "time=20261120T101500",
        "\"user=sofia.rossi@harbourworks.com.au\",server=pc-harbour,printer=hw-l2-mono,"
        "\"shared-account=Studio Nine, \"\"Events\"\"\",cost=0.30,time=20261120T111500",
        "user=tom.nguyen@harbourworks.com.au,server=pc-harbour,printer=hw-l1-mfd,"
        "shared-account=\"\"Koala\"\" Labs,cost=0.90,document-name=\"Q4, final.pdf\","
        "time=20261120T121500",
    ]
    path = "job-details/jobs-manual-shapes.txt"
    write(path, lines)
    return {path: (len(lines), 0)}


def papercut_export():
    """A job log exported with PaperCut's own column names and job states:
    refunded, cancelled, not printed and denied jobs are never billed."""
    header = ["Usage Date", "User", "Charged To Account", "Usage Cost",
              "Total Printed Pages", "Total Color Pages", "Copies", "Printer",
              "Document Name", "Job Comment", "total_sheets", "Refunded",
              "Cancelled", "Printed", "Usage Allowed"]
    rows = [
        ["2026-11-20 09:00:05", "maya.chen", "Acme Design", "1.20", "12", "2", "1",
         "hw-l2-colour", "Q4 board pack.pdf", "client pitch", "6", "N", "N", "Y", "Y"],
        ["2026-11-20 09:20:40", "liam.oconnor", "Studio Nine", "0.50", "5", "0", "1",
         "hw-l2-mono", "Floor plan L2.pdf", "", "3", "Y", "N", "Y", "Y"],
        ["2026-11-20 09:41:13", "zoe.martin", "zoe.martin", "0.80", "8", "0", "1",
         "hw-l2-mono", "Client brief.docx", "", "4", "N", "Y", "N", "Y"],
        ["2026-11-20 10:02:59", "tom.nguyen", "Koala Labs", "3.00", "6", "6", "1",
         "hw-l2-colour", "Pitch deck - Harbour.pptx", "", "6", "N", "N", "N", "Y"],
        ["2026-11-20 10:30:00", "noah.kim", "Studio Nine", "4.50", "9", "9", "1",
         "hw-l2-colour", "Wireframes, round 2.pdf", "over budget", "9", "N", "N", "N", "N"],
        ["2026-11-20 11:11:11", "priya.sharma", "priya.sharma", "0.20", "2", "0", "1",
         "hw-l1-mfd", "Boarding pass.pdf", "", "1", "N", "N", "Y", "Y"],
    ]
    lines = [",".join(header)]
    for r in rows:
        r = list(r)
        r[1] = f"{r[1]}@{DOMAIN}"
        if "." in r[2]:
            r[2] = f"{r[2]}@{DOMAIN}"
        lines.append(",".join(csv_field(v) for v in r))
    path = "exports/papercut-job-log-2026-11-20.csv"
    write(path, lines, newline="\r\n")
    return {path: (len(rows), 0)}


def job_details(rng):
    jobs = [j for j in make_jobs(rng, 20, 16) if j["kind"] == "print"]
    lines = []
    for j in jobs:
        t = j["time"].replace("-", "").replace(":", "").replace(" ", "T")
        pairs = [
            f"time={t}",
            f"user={j['user']}",
            f"server={SERVER}",
            f"printer={j['device']}",
            f"cost={money(j['cost'])}",
            f"total-pages={j['pages']}",
            f"total-color-pages={j['colour']}",
            f"copies={j['copies']}",
            f"document-name={j['document']}",
            f"duplex={'TRUE' if j['duplex'] else 'FALSE'}",
            f"grayscale={'FALSE' if j['colour'] else 'TRUE'}",
            "paper-size-name=A4",
            f"document-size-kb={rng.randint(40, 4000)}",
            f"client-machine={j['client']}",
            f"client-ip=10.20.0.{rng.randint(10, 250)}",
        ]
        if j["account"] != j["user"]:
            pairs.append(f"shared-account={j['account']}")
        lines.append(",".join(csv_field(p) for p in pairs))
    write("job-details/jobs-2026-11-20.txt", lines)
    return {"job-details/jobs-2026-11-20.txt": (len(lines), 0)}


def main():
    rng = random.Random(20261116)
    summary = {}
    summary.update(transactions(rng))
    summary.update(print_log(rng))
    summary.update(print_logger(rng))
    summary.update(job_details(rng))
    summary.update(print_logger_spanish())
    summary.update(print_logger_cyrillic())
    summary.update(print_logger_utf16())
    summary.update(job_details_manual())
    summary.update(papercut_export())
    for path, (charges, errors) in sorted(summary.items()):
        print(f"{path}: {charges} charges, {errors} errors")


if __name__ == "__main__":
    main()
