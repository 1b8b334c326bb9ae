package clientstr

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	if got := Quote("a\x00b"); got != `"a\x00b"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("x", 10000)
	got := Quote(long)
	if len(got) > MaxLogged+40 || !strings.HasSuffix(got, "… (10000 bytes)") {
		t.Errorf("Quote(10000 bytes) = %s", got)
	}
	if QuoteBytes([]byte(long)) != got {
		t.Error("QuoteBytes and Quote differ")
	}
}

func TestTrim(t *testing.T) {
	if got := Trim("a b"); got != "a b" {
		t.Errorf("Trim(short) = %q", got)
	}
	long := strings.Repeat("y", 5000)
	got := Trim(long)
	if !strings.HasPrefix(got, strings.Repeat("y", MaxLogged)+"…") || !strings.HasSuffix(got, "(5000 bytes)") || len(got) > MaxLogged+30 {
		t.Errorf("Trim(5000 bytes) = %q", got)
	}
	if TrimBytes([]byte(long)) != got {
		t.Error("TrimBytes and Trim differ")
	}
}
